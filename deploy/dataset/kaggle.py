"""dataset.kaggle: the account's key stays on this machine; the host gets a signed link only.

Kaggle's key is account-wide (it can read every dataset and competition the account can,
upload, and delete), and the rented host is someone else's machine. So the download endpoint
is asked here: `GET {api}/datasets/download/{owner}/{slug}` with HTTP Basic credentials
answers with a redirect to a signed Google Cloud Storage URL
(storage.googleapis.com/kaggle-data-sets/...?X-Goog-Algorithm=...&X-Goog-Expires=...&X-Goog-Signature=...)
that works without credentials for a few days. That URL alone goes to the host. (The shape:
kaggle-api's `datasets_download`, "GET /datasets/download/{ownerSlug}/{datasetSlug}", and
kagglehub's clients.py, which resumes from `response.url`, "URL after redirection", without
the credentials.)

urllib with redirects turned off, rather than the kaggle package: we need the Location
header, not the file, and the kaggle client follows the redirect and downloads.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from deploy.errors import UsageError
from deploy.http_guard import refuse_plain_http

API = "https://www.kaggle.com/api/v1"
TIMEOUT_S = 30
_REDIRECTS = (301, 302, 303, 307, 308)


def api_base(env) -> str:
    return (env.get("DEPLOY_KAGGLE_API") or API).rstrip("/")  # a mirror, or the tests' local fake


def credentials(env) -> tuple[str, str]:
    """(username, key) from KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json, as the kaggle CLI reads them."""
    user, key = env.get("KAGGLE_USERNAME"), env.get("KAGGLE_KEY")
    if user and key:
        return user, key
    cfg = os.path.join(env.get("KAGGLE_CONFIG_DIR") or os.path.expanduser("~/.kaggle"), "kaggle.json")
    try:
        with open(cfg) as fh:
            creds = json.load(fh)
        return creds["username"], creds["key"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError("Kaggle credentials missing: set KAGGLE_USERNAME and KAGGLE_KEY, or create "
                         "~/.kaggle/kaggle.json (kaggle.com > Settings > API > Create New Token)") from None


def basic_auth(env) -> dict[str, str]:
    user, key = credentials(env)
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx surfaces as an HTTPError whose Location we read


def signed_url(slug: str, env) -> str:
    """The signed storage URL of the dataset's archive: asked here with the key, usable without it."""
    url = f"{api_base(env)}/datasets/download/{slug}"
    refuse_plain_http(url, "your Kaggle key", "DEPLOY_KAGGLE_API")
    req = urllib.request.Request(url, headers={**basic_auth(env), "User-Agent": "violence-trainer-deploy"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=TIMEOUT_S):
            pass  # a 200: the archive itself, not a link to it
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in _REDIRECTS and exc.headers.get("Location"):
            location = urllib.parse.urljoin(url, exc.headers["Location"])
            if urllib.parse.urlsplit(location).scheme in ("http", "https"):
                return location
        if exc.code in (401, 403):
            raise UsageError(f"Kaggle refused the credentials for {slug} (HTTP {exc.code}): check KAGGLE_USERNAME "
                             f"and KAGGLE_KEY (or ~/.kaggle/kaggle.json), and that you accepted the dataset's "
                             f"terms on kaggle.com") from None
        if exc.code == 404:
            raise UsageError(f"Kaggle has no dataset {slug} (HTTP 404): dataset.kaggle is OWNER/DATASET as in "
                             f"the dataset's URL") from None
        raise UsageError(f"Kaggle answered HTTP {exc.code} to the download of {slug}: try again later") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UsageError(f"cannot reach Kaggle at {urllib.parse.urlsplit(url).netloc} "
                         f"({getattr(exc, 'reason', exc)}): check this machine's network") from None
    raise UsageError(f"Kaggle sent the archive of {slug} itself instead of a signed link to it: the host cannot "
                     f"download it without your key, which never leaves this machine; download it here and "
                     f"set dataset.path instead")
