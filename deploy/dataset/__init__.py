"""The dataset's way to the host, decided on this machine.

A local folder (dataset.path) goes by rsync (deploy/sync.py). An archive (dataset.url,
dataset.kaggle) is downloaded by the host itself (deploy/host/shipped/download_dataset.py)
from the link and headers made here:

- source.py   where from and with which credentials: dataset.url with its bearer token, or
              dataset.kaggle's signed link (for the host) and Basic credentials (for the
              plan's size lookup, from here only)
- kaggle.py   Kaggle's API: the account's key stays on this machine, the host gets a signed link
"""
