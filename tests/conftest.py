"""Shared fixtures: the default image, built once per machine through the real builder."""

import pytest

from qppsuite.core.image import ImageBundle, cache_dir, open_image
from qppsuite.errors import ImageError
from qppsuite.images.builder import build_image
from qppsuite.session import DEFAULT_IMAGE


@pytest.fixture(scope="session")
def default_image() -> ImageBundle:
    """The default image from the user's cache, built (downloads through apt) when missing or broken.

    Guest tests boot this real image; nothing about it is faked.
    """
    try:
        return open_image(DEFAULT_IMAGE, cache=cache_dir())
    except ImageError:
        return build_image(DEFAULT_IMAGE, cache=cache_dir())
