"""The job model: what a whole run costs on each offer, phase by phase, before renting.

- job_model.py  a Job (bytes, videos, epochs) priced on an offer: upload, pull, extract, train,
                the bill and which phase bounds it; `rank` orders offers by it
- inputs.py     the Job for this project, from configs/deploy.yaml, the dataset scan and what
                earlier runs measured
- sizes.py      sizes looked up before renting: local folders, dataset.url's Content-Length, Kaggle's totalBytes
- report.py     .deploy/plan.json: the estimate `up` made, the uplink `sync` measured, and the
                estimate-vs-actual table `status` and `fetch` print (and learn from)
"""
