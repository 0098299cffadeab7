"""Shared fixtures: the default image, built once per machine through the real builder."""

import pytest

from qppsuite.errors import ImageError
from qppsuite.images.builder import build_image
from qppsuite.images.bundle import ImageBundle, cache_dir, open_image
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.profiles.profile import KernelProfile, ProfileError
from qppsuite.session import DEFAULT_IMAGE


def _current(name: str, packages: tuple[str, ...] = (), suite: str = "bookworm") -> ImageBundle:
    """The bundle ``name`` from the user's cache, (re)built when missing, broken, or older than the tests.

    A bundle built before its manifest recorded the initrd's unpacked size (``rootfs_bytes``) is rebuilt, and
    so is one whose profile osi_linux cannot resolve (made before the builder kept what it reads, such as
    6.12's ``enum mod_mem_type``), and one without the toolkit its init runs commands with.
    """
    try:
        bundle = open_image(name, cache=cache_dir())
        current = "rootfs_bytes" in (bundle.manifest.get("initrd") or {}) and "toolkit" in bundle.manifest
        if current and _osi_can_read(bundle):
            return bundle
    except ImageError:
        pass
    return build_image(name, packages=packages, suite=suite, cache=cache_dir())


def _osi_can_read(bundle: ImageBundle) -> bool:
    if bundle.profile_path is None:
        return True
    try:
        KernelLayout.from_profile(KernelProfile.load(bundle.profile_path))
    except ProfileError:
        return False
    return True


@pytest.fixture(scope="session")
def default_image() -> ImageBundle:
    """The default image from the user's cache, built (downloads through apt) when missing or broken.

    Guest tests boot this real image; nothing about it is faked.
    """
    return _current(DEFAULT_IMAGE)


ORACLE_PACKAGES = ("strace", "perl-base", "python3", "pigz")
ORACLE_IMAGE = "debian-armhf+" + "+".join(ORACLE_PACKAGES)
ORACLE_RAM_MIB = 512
"""RAM for the oracle image: its initramfs (python3 and perl unpacked) does not fit the default 256 MiB comfortably."""


@pytest.fixture(scope="session")
def oracle_image() -> ImageBundle:
    """The default image plus strace, perl, python3 and pigz: real Debian programs and the guest's own tracer.

    Tests that compare the plugins with what the guest itself reports (strace, /proc) boot this image.
    """
    return _current(ORACLE_IMAGE, ORACLE_PACKAGES)


TRIXIE_IMAGE = "debian-armhf-trixie"


@pytest.fixture(scope="session")
def trixie_image() -> ImageBundle:
    """The default image's recipe from Debian trixie (``image build --suite trixie``): its 6.12 armmp kernel
    and busybox, merged /usr."""
    return _current(TRIXIE_IMAGE, suite="trixie")


#: The Debian suites whose armmp kernels osi_linux reads, with the kernel each serves (for test ids).
KERNEL_SUITES = {"bookworm": "6.1", "trixie": "6.12", "bullseye": "5.10"}


def _suite_image(suite: str, packages: tuple[str, ...] = ()) -> ImageBundle:
    """The default image's recipe (plus ``packages``) from ``suite``: ``debian-armhf[-SUITE][+PKG...]``."""
    name = DEFAULT_IMAGE + ("" if suite == "bookworm" else f"-{suite}") + "".join(f"+{p}" for p in packages)
    return _current(name, packages, suite=suite)


@pytest.fixture(scope="session", params=list(KERNEL_SUITES), ids=[f"{s}-{v}" for s, v in KERNEL_SUITES.items()])
def suite_image(request: pytest.FixtureRequest) -> ImageBundle:
    """The default image from each suite in KERNEL_SUITES (bookworm's is ``default_image``): a test taking it
    runs once per kernel version."""
    return _suite_image(request.param)


@pytest.fixture(scope="session", params=list(KERNEL_SUITES), ids=[f"{s}-{v}" for s, v in KERNEL_SUITES.items()])
def suite_oracle_image(request: pytest.FixtureRequest) -> ImageBundle:
    """``oracle_image``'s recipe from each suite in KERNEL_SUITES (bookworm's is ``oracle_image``)."""
    return _suite_image(request.param, ORACLE_PACKAGES)


IMAGE_FIXTURES = ("default_image", "oracle_image", "trixie_image", "suite_image", "suite_oracle_image")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that takes an image fixture must be marked ``boot``, so that ``-m "not boot"`` stays fast."""
    unmarked = [
        item.nodeid
        for item in items
        if set(IMAGE_FIXTURES) & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("boot") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"tests using {' or '.join(IMAGE_FIXTURES)} without the boot mark: {unmarked}")
