"""Video modality: moving-digit clips, video folders, tubelet tokens, MP4/GIF samples.

Public parts (referenced by ``configs/modality/video.yaml``):

* :class:`MovingDigitsDataset` - embedded procedural data, generated into the cache on first use.
* :class:`MovingMNISTDataset` - real MNIST digits bouncing (the ``mnist5k`` source), split by digit id.
* :class:`VideoFolderDataset` - user clips (mp4/avi/webm/mkv), decord with a PyAV fallback.
* :class:`TubeletTokenizer` - ``(pt, ph, pw)`` patches <-> tokens with (t, h, w) coordinates.
* :class:`VideoSampleWriter` - MP4 + GIF grid, frame strip PNG, one MP4 per clip.
* :func:`bounce_fit_error` - motion metric of the moving-digit data (no pretrained network);
  :func:`motion_report` scores generated clips next to real ones.
"""

from modalities.video.folder import VideoFolderDataset, resize_crop
from modalities.video.io import VIDEO_EXTENSIONS, VideoInfo, probe, read_frames, write_mp4
from modalities.video.moving_mnist import MovingMNISTDataset
from modalities.video.sprites import (MovingDigitsDataset, bounce_fit_error, motion_metrics, motion_report,
                                      shape_consistency, track_centres)
from modalities.video.tokenizer import TubeletTokenizer
from modalities.video.writer import VideoSampleWriter

__all__ = [
    "MovingDigitsDataset", "MovingMNISTDataset", "VideoFolderDataset", "TubeletTokenizer", "VideoSampleWriter",
    "bounce_fit_error", "motion_metrics", "motion_report", "shape_consistency", "track_centres",
    "probe", "read_frames", "write_mp4", "resize_crop",
    "VideoInfo", "VIDEO_EXTENSIONS",
]
