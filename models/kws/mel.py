"""Log-mel features, the reference implementation: models/audio/mel.go must match it
(TestLogMel_MatchesReference compares the two on mel_reference.json)."""
import math

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 512
WIN = 400   # 25 ms
HOP = 160   # 10 ms
N_MELS = 40
F_MIN, F_MAX = 20.0, 7600.0


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def filterbank():
    """Triangular HTK-style filters on the N_FFT/2+1 bins."""
    mels = np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2)
    hz = mel_to_hz(mels)
    bins = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    fb = np.zeros((N_MELS, N_FFT // 2 + 1), np.float64)
    for m in range(N_MELS):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (bins - lo) / (c - lo)
        down = (hi - bins) / (hi - c)
        fb[m] = np.maximum(0, np.minimum(up, down))
    return fb


FB = filterbank()
WINDOW = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(WIN) / WIN)  # periodic Hann


def log_mel(x):
    """x: float samples at 16 kHz. Returns [frames, N_MELS] float32, frames = 1 + (len-WIN)//HOP."""
    x = np.asarray(x, np.float64)
    n = 1 + (len(x) - WIN) // HOP
    out = np.zeros((n, N_MELS), np.float64)
    for i in range(n):
        frame = np.zeros(N_FFT)
        frame[:WIN] = x[i * HOP:i * HOP + WIN] * WINDOW
        spec = np.abs(np.fft.rfft(frame)) ** 2
        out[i] = np.log(FB @ spec + 1e-6)
    return out.astype(np.float32)
