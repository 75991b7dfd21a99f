"""Convert the LPIPS v0.1 'vgg' lin weights of the BSD-2 `lpips` PyPI package to a small .npz.

How fastgan_tf/assets/lpips_vgg_v0.1.npz was made (no torch needed):

    pip download lpips==0.1.4 --no-deps -d /tmp/lpips
    python tools/convert_lpips_weights.py /tmp/lpips/lpips-0.1.4-py3-none-any.whl \
        fastgan_tf/assets/lpips_vgg_v0.1.npz

Made from lpips-0.1.4-py3-none-any.whl, sha256
fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e; its vgg.pth has sha256
a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868.

The wheel is a zip; `lpips/weights/v0.1/vgg.pth` inside it is a state dict in torch's *legacy*
(pre-1.6) serialisation: five pickles in a row (magic number, protocol version, system info, the
state dict whose tensors reference storages by persistent id, the list of storage keys) followed by
the raw storages (an int64 element count, then little-endian float32 data each). This script reads
that format with the standard `pickle` module, so torch is not needed. The result has arrays
lin0..lin4 of shape (C,) = (64, 128, 256, 512, 512): the 1x1 conv kernels (1, C, 1, 1) flattened.

Only use the PyPI `lpips` package (BSD-2, richzhang/PerceptualSimilarity): the copy of vgg.pth in
the FastGAN repository is GPL-3.0 content.
"""

import argparse
import collections
import io
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

PTH_IN_WHEEL = "lpips/weights/v0.1/vgg.pth"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
CHANNELS = (64, 128, 256, 512, 512)


class _StorageRef:
    """Stands in for a torch storage until its bytes are read after the pickles."""

    def __init__(self, key, numel):
        self.key, self.numel, self.data = key, numel, None


def _rebuild_tensor_v2(storage, offset, size, stride, *_unused):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only the few globals a float32 legacy state dict uses; anything else is refused."""

    def __init__(self, f, storages):
        super().__init__(f, encoding="latin1")
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch", "FloatStorage"):
            return "float32"
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the .pth")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel, view = pid
        if kind != "storage" or dtype != "float32" or view is not None:
            raise pickle.UnpicklingError(f"unsupported storage reference {pid!r}")
        return self.storages.setdefault(key, _StorageRef(key, numel))


def read_legacy_state_dict(raw):
    """Return {name: np.ndarray} from the bytes of a legacy-format .pth of float32 tensors."""
    f = io.BytesIO(raw)
    if pickle.load(f) != LEGACY_MAGIC:
        raise ValueError("not a legacy torch file (bad magic number)")
    pickle.load(f)  # protocol version (1001)
    pickle.load(f)  # sys info: {'little_endian': True, 'type_sizes': ...}
    storages = {}
    state = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        ref = storages[key]
        if numel != ref.numel:
            raise ValueError(f"storage {key}: {numel} elements, expected {ref.numel}")
        ref.data = np.frombuffer(f.read(4 * numel), dtype="<f4")
    if f.read():
        raise ValueError("trailing bytes after the last storage")
    out = {}
    for name, (_, ref, offset, size, stride) in state.items():
        contiguous = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
        if stride != contiguous:
            raise ValueError(f"{name}: non-contiguous stride {stride}")
        n = int(np.prod(size))
        out[name] = ref.data[offset:offset + n].reshape(size).astype(np.float32)
    return out


def convert(wheel, out):
    with zipfile.ZipFile(wheel) as z:
        state = read_legacy_state_dict(z.read(PTH_IN_WHEEL))
    arrays = {}
    for i, c in enumerate(CHANNELS):
        w = state[f"lin{i}.model.1.weight"]
        if w.shape != (1, c, 1, 1):
            raise ValueError(f"lin{i}: shape {w.shape}, expected (1, {c}, 1, 1)")
        arrays[f"lin{i}"] = w.reshape(c)
    np.savez(out, **arrays)
    return arrays


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path, help="lpips-*.whl from `pip download lpips --no-deps`")
    p.add_argument("out", type=Path, help="output .npz")
    args = p.parse_args(argv)
    for name, a in convert(args.wheel, args.out).items():
        print(f"{name}: shape {a.shape}, min {a.min():.4g}, max {a.max():.4g}, sum {a.sum():.6g}")


if __name__ == "__main__":
    sys.exit(main())
