"""Reads a mics checkpoint with h5py alone: tensors by name with their true shapes, the
values the synthetic test states hold, every stored checksum recomputed with numpy, and
the safetensors export compared tensor by tensor. Usage: check_with_h5py.py FILE EXPORT"""
import json
import struct
import sys

import h5py
import numpy as np

M64 = (1 << 64) - 1


def fmix64(k):
    k = k ^ (k >> np.uint64(33))
    k = k * np.uint64(0xFF51AFD7ED558CCD)
    k = k ^ (k >> np.uint64(33))
    k = k * np.uint64(0xC4CEB9FE1A85EC53)
    return k ^ (k >> np.uint64(33))


def checksum(x):
    bits = np.ascontiguousarray(x, dtype="<f4").reshape(-1).view("<u4").astype(np.uint64)
    i = np.arange(bits.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(fmix64(fmix64(i) ^ bits).sum(dtype=np.uint64))


def synthetic_value(group, name, i):  # the C++ test helper, in Python integers
    h = 1469598103934665603 ^ (group + 1)
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) & M64
    h ^= (i * 0x9E3779B97F4A7C15) & M64
    h ^= h >> 29
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 32
    return np.float32((h % 2000003) / 1000.0 - 1000.0)


def main(path, export):
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == b"mics-checkpoint" or f.attrs["format"] == "mics-checkpoint", f.attrs["format"]
        assert int(f.attrs["step"]) == 12
        w = f["/model/h0.attn.w"][...]
        assert w.shape == (8, 3, 4) and w.dtype == np.float32, (w.shape, w.dtype)
        want = np.array([synthetic_value(0, "h0.attn.w", i) for i in range(w.size)], dtype=np.float32)
        assert np.array_equal(w.reshape(-1), want)
        v = f["/optimizer/adam_v/wte"][...]
        assert v.shape == (37, 8)
        assert np.array_equal(v.reshape(-1), [synthetic_value(2, "wte", i) for i in range(v.size)])
        assert f["/model/h0.gain"].shape == ()
        n = 0
        for group in ("model", "optimizer/adam_m", "optimizer/adam_v"):
            for name, ds in f[group].items():
                got = checksum(ds[...])
                assert got == int(ds.attrs["checksum"]), (group, name, got, int(ds.attrs["checksum"]))
                n += 1
        with open(export, "rb") as e:
            (hlen,) = struct.unpack("<Q", e.read(8))
            header = json.loads(e.read(hlen))
            data = e.read()
        assert header["__metadata__"]["step"] == "12"
        names = [k for k in header if k != "__metadata__"]
        assert sorted(names) == sorted(f["model"].keys()), names
        for name in names:
            h = header[name]
            b, end = h["data_offsets"]
            x = np.frombuffer(data[b:end], dtype="<f4").reshape(h["shape"])
            assert h["dtype"] == "F32" and np.array_equal(x, f["model"][name][...]), name
    print(f"h5py: ok ({n} checksums recomputed, {len(names)} exported tensors match)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
