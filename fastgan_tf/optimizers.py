"""Adam with PyTorch's update, as the reference and the SSD paper train with it.

``keras.optimizers.Adam`` folds the bias corrections into the step size and adds epsilon to the
*uncorrected* sqrt(v): its epsilon acts like PyTorch's epsilon / sqrt(1 - beta2^t), 32x larger at
step 1 and still 1.3x at step 1000 (beta2 = 0.999), which changes the update of every weight whose
gradients are small. ``TorchAdam`` applies the documented ``torch.optim.Adam`` update
(amsgrad=False, weight_decay=0, maximize=False) at step t = iterations + 1:

    m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t)           v_hat = v / (1 - b2^t)
    p -= lr * m_hat / (sqrt(v_hat) + eps)

computed (algebraically the same) as p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

It only replaces ``update_step``: the variables (``_iterations``, ``_learning_rate``, then the
``m`` and ``v`` slots per weight), their names and their order are ``keras.optimizers.Adam``'s,
so checkpoints written with Keras's Adam restore into it, and
``keras.optimizers.LossScaleOptimizer`` wraps it like any Keras optimizer.
"""

import keras
import tensorflow as tf
from keras.src.utils.naming import auto_name


class TorchAdam(keras.optimizers.Adam):
    """``torch.optim.Adam`` (no amsgrad, no weight decay) with Keras Adam's variables; the
    defaults are torch's. The betas and epsilon are Python floats.

    Scalars are computed as PyTorch computes them, in Python's float64, then rounded once to the
    weight's dtype: 1 - beta2 and the bias corrections (1 - b^t, from the step counter) and the
    step size lr / (1 - b1^t). Computed in float32 instead, 1 - 0.999 is off by 1.3e-5 relative,
    two hundred times float32's rounding.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, name=None,
                 **kwargs):
        if kwargs.get("amsgrad") or kwargs.get("weight_decay"):
            raise ValueError("TorchAdam has neither amsgrad nor weight decay")
        # Named like Keras's Adam ("adam", "adam_1", ...), so its variables are named alike too.
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         name=name or auto_name("Adam"), **kwargs)

    def _bias_corrections(self, learning_rate, dtype):
        """(lr / (1 - b1^t), sqrt(1 - b2^t)) at t = iterations + 1, computed in float64."""
        t = tf.cast(self.iterations + 1, tf.float64)
        correction_1 = 1.0 - tf.pow(tf.constant(self.beta_1, tf.float64), t)
        correction_2 = 1.0 - tf.pow(tf.constant(self.beta_2, tf.float64), t)
        step_size = tf.cast(learning_rate, tf.float64) / correction_1
        return tf.cast(step_size, dtype), tf.cast(tf.sqrt(correction_2), dtype)

    def update_step(self, gradient, variable, learning_rate):
        """One PyTorch Adam step for one weight (epsilon added to the bias-corrected sqrt(v))."""
        dtype = variable.dtype
        gradient = tf.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        # Python floats: 1 - beta is rounded once, from float64, as torch does.
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * tf.square(gradient))
        step_size, sqrt_correction_2 = self._bias_corrections(learning_rate, dtype)
        denominator = tf.sqrt(v) / sqrt_correction_2 + self.epsilon
        self.assign_sub(variable, step_size * (m / denominator))
