"""google.colab.drive, faked: "Google Drive" is the folder named by FAKE_COLAB_DRIVE."""

import os

_mounted = []


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    drive = os.environ["FAKE_COLAB_DRIVE"]
    os.makedirs(os.path.join(drive, "MyDrive"), exist_ok=True)
    if os.path.islink(mountpoint) and os.readlink(mountpoint) == drive:
        print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, "
              f'call drive.mount("{mountpoint}", force_remount=True).')
        return
    if os.path.lexists(mountpoint):
        raise ValueError("Mountpoint must not already contain files")  # Colab's own message
    os.makedirs(os.path.dirname(mountpoint), exist_ok=True)
    os.symlink(drive, mountpoint)
    _mounted.append(mountpoint)
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    while _mounted:
        os.unlink(_mounted.pop())
