"""gpuaug: image decoding and augmentation for PyTorch, batched on the GPU.

Workers read raw bytes; the device stage decodes and augments whole batches with
per-sample random parameters drawn from a counter-based generator.

Example:
    >>> import gpuaug
    >>> from gpuaug import transforms as T
    >>> loader = gpuaug.DataLoader([], batch_size=2, device="cpu", transform=T.RandomHorizontalFlip())
    >>> list(loader)
    []
"""
from . import transforms
from .convert import from_torchvision
from .errors import BadSample, BadSampleError
from .loader import DataLoader
from .profile import Profile, profile
from .viz import compare, show, show_replay

__version__ = "0.1.0"
__all__ = ["DataLoader", "show", "show_replay", "compare", "profile", "Profile", "from_torchvision", "BadSample", "BadSampleError", "transforms", "__version__"]
