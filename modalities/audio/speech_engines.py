"""Offline speech synthesizers for the spoken-digit data set: espeak-ng (ctypes) and CMU flite.

Both come from verified source folders (modalities/data/sources.py: ``espeak_ng``, ``flite``);
nothing is downloaded here. A render job is a plain dict:

* espeak: ``{"engine": "espeak", "voice": "en-us+f3", "text": "seven", "rate": 175, "pitch": 50,
  "range": 50, "seed": 123}`` (rate in words per minute, pitch/range 0-100, seed for libc's
  ``rand`` which the breathy and Klatt voices use for noise).
* flite: ``{"engine": "flite", "voice": "slt", "text": "seven", "stretch": 1.1, "f0": 160}``
  (duration_stretch > 1 is slower; f0 = int_f0_target_mean in Hz, ignored by some voices).

Results are ``(int16 samples (L,), sample_rate)``: espeak-ng speaks at 22050 Hz, flite at 16000 Hz
(8000 Hz for ``kal``).

Why espeak-ng runs in a separate worker process that forks once per job: the library is
process-global and keeps state between utterances (its pitch "flutter" phase, filter memories,
the libc ``rand`` stream), so the same job rendered twice in one process gives different
samples. A child forked from a worker that has initialised the library but never spoken starts
from the same state every time, which makes every render byte-identical whatever the order of
jobs. The worker is this file run as a script (``python speech_engines.py``): it imports only the
standard library, so neither torch nor the training process ever loads espeak-ng.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

ESPEAK_SYNCHRONOUS = 2          # espeak_AUDIO_OUTPUT: samples come back through the callback only
ESPEAK_DONT_EXIT = 0x8000       # espeakINITIALIZE_DONT_EXIT: report errors instead of exit()
ESPEAK_RATE, ESPEAK_PITCH, ESPEAK_RANGE = 1, 3, 4  # espeak_PARAMETER
POS_CHARACTER = 1


class SpeechEngineError(RuntimeError):
    """A synthesizer that cannot render a job; the message names the engine, the job and the fix."""


# ---------------------------------------------------------------------------------------------
# espeak-ng


def espeak_variants(source: Path) -> set[str]:
    """Voice variants (``+name``) the espeak-ng data folder holds (``espeak-ng-data/voices/!v``)."""
    return {p.name for p in (Path(source) / "espeak-ng-data" / "voices" / "!v").iterdir()}


def render_espeak(jobs: list[dict], source: Path) -> list[tuple[bytes, int]]:
    """Render espeak jobs in one worker process; returns ``(little-endian int16 bytes, rate)`` per job."""
    source = Path(source)
    known = espeak_variants(source)
    for job in jobs:  # espeak_SetVoiceByName accepts an unknown variant silently: check it here
        variant = job["voice"].partition("+")[2]
        if variant and variant not in known:
            raise SpeechEngineError(f"espeak-ng: voice variant {variant!r} of {job['voice']!r} is not in "
                                    f"{source}/espeak-ng-data/voices/!v; choose one of {sorted(known)[:12]}...")
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        tmp = Path(tmp)
        for i, job in enumerate(jobs):  # one file per job: the worker never holds the whole list (see below)
            (tmp / f"{i}.json").write_text(json.dumps(job, sort_keys=True))
        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(source), str(tmp), str(len(jobs))],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
        if res.returncode != 0:
            raise SpeechEngineError(f"espeak-ng worker failed (exit {res.returncode}) on {source}: "
                                    f"{res.stderr.strip()[-800:]}; re-fetch with `python -m modalities.data fetch "
                                    "espeak_ng`")
        rate = int((tmp / "rate").read_text())
        return [((tmp / f"{i}.pcm").read_bytes(), rate) for i in range(len(jobs))]


def _espeak_worker(source: str, work: str, count: int) -> None:
    """Script entry: render ``work/<i>.json`` into ``work/<i>.pcm`` for i < count, one forked child per job.

    Each child reads its own job: some renders depend on memory the library reads before writing,
    so the parent's state at every fork must not depend on the other jobs of the list.
    """
    lib = ctypes.CDLL(str(Path(source) / "libespeak-ng.so"))
    libc = ctypes.CDLL(None)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    # The path argument is the folder that CONTAINS espeak-ng-data.
    rate = lib.espeak_Initialize(ESPEAK_SYNCHRONOUS, 0, source.encode(), ESPEAK_DONT_EXIT)
    if rate <= 0:
        sys.exit(f"espeak_Initialize({source}) returned {rate}: espeak-ng-data missing or unreadable")
    chunks: list[bytes] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, n, _events):
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0  # 0 = continue synthesis

    keep_alive = callback_type(collect)
    lib.espeak_SetSynthCallback(keep_alive)
    for i in range(count):
        pid = os.fork()
        if pid == 0:  # the child speaks from the worker's pristine state, writes its file, exits
            code, job = 0, None
            try:
                job = json.loads((Path(work) / f"{i}.json").read_text())
                libc.srand(int(job.get("seed", 0)) & 0x7FFFFFFF)
                if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
                    raise ValueError(f"unknown voice {job['voice']!r}")
                for param, key in ((ESPEAK_RATE, "rate"), (ESPEAK_PITCH, "pitch"), (ESPEAK_RANGE, "range")):
                    lib.espeak_SetParameter(param, int(job[key]), 0)
                text = job["text"].encode() + b"\0"
                if lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, 0, None, None) != 0:
                    raise ValueError("espeak_Synth failed")
                lib.espeak_Synchronize()
                (Path(work) / f"{i}.pcm").write_bytes(b"".join(chunks))
            except Exception as e:  # noqa: BLE001 - reported through the exit code and stderr
                sys.stderr.write(f"job {i} {job}: {e}\n")
                code = 3
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit(f"espeak-ng job {i} ({(Path(work) / f'{i}.json').read_text()}) failed with status {status}")
    (Path(work) / "rate").write_text(str(rate))


# ---------------------------------------------------------------------------------------------
# flite

FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")


def render_flite(job: dict, source: Path) -> tuple[bytes, int]:
    """Render one flite job with ``<source>/bin/flite`` (libraries from ``<source>/lib``)."""
    source = Path(source)
    if job["voice"] not in FLITE_VOICES:
        raise SpeechEngineError(f"flite: unknown voice {job['voice']!r}; choose one of {FLITE_VOICES}")
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        out = Path(tmp) / "out.wav"
        cmd = [str(source / "bin" / "flite"), "-voice", job["voice"], "--setf", f"duration_stretch={job['stretch']}",
               "--setf", f"int_f0_target_mean={job['f0']}", "-t", job["text"], "-o", str(out)]
        env = {**os.environ, "LD_LIBRARY_PATH": str(source / "lib")}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0 or not out.is_file():
            raise SpeechEngineError(f"flite failed (exit {res.returncode}) for {job}: {res.stderr.strip()[-500:]}; "
                                    "re-fetch with `python -m modalities.data fetch flite`")
        with wave.open(str(out), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise SpeechEngineError(f"flite wrote {w.getnchannels()} channels of {8 * w.getsampwidth()} bit; "
                                        "expected mono 16-bit")
            return w.readframes(w.getnframes()), w.getframerate()


if __name__ == "__main__":  # the espeak-ng worker: python speech_engines.py SOURCE_DIR WORK_DIR
    _espeak_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
