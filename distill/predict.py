"""``python -m distill.predict``: depth maps for pictures, folders and videos.

The code lives in :mod:`distill.deploy.predict`; this module only runs its ``main``.
"""

from distill.deploy.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
