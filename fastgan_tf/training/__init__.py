"""Training: the model registry, the GANs and their steps, and the loop that runs a run folder.

    registry.py   which models exist (fastgan, ssd) and what each brings: one line per model
    fastgan.py    FastGAN's training state and its step, readable top to bottom
    ssd.py        the Spectral Style-DCGAN baseline, the same interface
    sharding.py   splitting a step over replicas and micro-batches with the same random draws
    loop.py       the run folder: resume, epochs, samples, checkpoints, FID, Ctrl-C, NaN rollback

Start a run with `fastgan_tf.training.loop.train(cfg)` (what train.py calls).
"""
