"""google.colab.files, faked: upload() returns the files named in FAKE_COLAB_UPLOAD (os.pathsep-separated)."""

import os


def upload(target_dir=""):
    uploaded = {}
    for path in os.environ["FAKE_COLAB_UPLOAD"].split(os.pathsep):
        name = os.path.basename(path)
        with open(path, "rb") as source:
            uploaded[name] = source.read()
        with open(os.path.join(target_dir, name), "wb") as copy:
            copy.write(uploaded[name])
        print(f"Saving {name} to {name}")
    return uploaded
