"""Audio modality: synthetic instruments, audio folders, log-mel tokens, WAV/spectrogram samples.

Public parts (referenced by ``configs/modality/audio.yaml``):

* :class:`SynthInstrumentsDataset` - embedded procedural data, generated into the cache on first use.
* :class:`AudioFolderDataset` - user audio (wav/flac/ogg/mp3), mono, resampled, cropped/padded.
* :class:`MelTokenizer` - normalised log-mel patches <-> tokens; decode via Griffin-Lim.
* :class:`AudioSampleWriter` - combined WAV, spectrogram PNG, one WAV per clip.
"""

from modalities.audio.folder import AudioFolderDataset, crop_or_pad
from modalities.audio.io import AUDIO_EXTENSIONS, AudioInfo, probe, read_audio, write_wav
from modalities.audio.mel import MelTokenizer
from modalities.audio.synth import INSTRUMENTS, SynthInstrumentsDataset
from modalities.audio.writer import AudioSampleWriter

__all__ = [
    "SynthInstrumentsDataset", "AudioFolderDataset", "MelTokenizer", "AudioSampleWriter", "INSTRUMENTS",
    "probe", "read_audio", "write_wav", "crop_or_pad", "AudioInfo", "AUDIO_EXTENSIONS",
]
