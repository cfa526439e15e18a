#!/usr/bin/env python3
"""The skin API's quick-start, as a client of the cloud service writes it
(requests + websockets), against the appliance: only the host changes.

    pip install requests websockets
    ARGUS_EMAIL=dev@acme.test ARGUS_PASSWORD='correct horse battery' \
        python3 scripts/skin_quickstart.py selfie.jpg [https://127.0.0.1:8443]

The appliance's certificate is self-signed: this script trusts
$ARGUS_STATE_DIR/tls/cert.pem (state/ by default) when it exists, and
otherwise says so and does not verify (a test box only)."""

import base64
import datetime
import json
import os
import ssl
import sys
import tempfile
import time

import requests
from websockets.sync.client import connect

photo = sys.argv[1]
SAAS_HOST = sys.argv[2] if len(sys.argv) > 2 else "https://127.0.0.1:8443"
CA = os.path.join(os.environ.get("ARGUS_STATE_DIR", "state"), "tls", "cert.pem")
verify = CA if os.path.exists(CA) else False
if not verify:
    print(f"no certificate at {CA}: not verifying the appliance's TLS certificate", file=sys.stderr)
ws_ssl = ssl.create_default_context(cafile=CA) if verify else ssl._create_unverified_context()
if not verify:
    requests.packages.urllib3.disable_warnings()

# Login: access_token (1 h), company_id, user id.
resp = requests.post(f"{SAAS_HOST}/api/v1/login/", verify=verify,
                     json={"username": os.environ["ARGUS_EMAIL"], "password": os.environ["ARGUS_PASSWORD"]})
resp.raise_for_status()
token = resp.json()["access_token"]
company_id = resp.json()["company_id"]
user_id = resp.json()["id"]
H = {"Authorization": f"Bearer {token}"}
C = f"{SAAS_HOST}/api/v1/companies/{company_id}"

# Dataset (image type 1 = selfie), then attach the application with the
# face detector (40) and redness (30), as the reference's curl sample does.
dataset_id = requests.post(f"{C}/datasets/", json={"name": "My dataset name", "image_type_id": 1},
                           headers=H, verify=verify).json()["id"]
FACE_METRICS = "8b5b3acc-480b-4412-8d2c-ebe6ab4384d7"
r = requests.post(f"{C}/applications/{FACE_METRICS}/runs/", headers=H, verify=verify,
                  json={"dataset_id": dataset_id, "enabled_algorithms": [30, 40]})
print(r.json()["message"])

# Subject, batch, then the image as base64.
S = f"{C}/datasets/{dataset_id}/subjects"
subject_id = requests.post(f"{S}/", json={"name": "My subject name"}, headers=H, verify=verify).json()["id"]
batch_id = requests.post(f"{S}/{subject_id}/batches/", headers=H, verify=verify).json()["id"]
algorithms = requests.get(f"{SAAS_HOST}/api/v1/dicts/algorithms/", verify=verify).json()

host = SAAS_HOST.split("://", 1)[1]
with connect(f"wss://{host}/notifications/?user_id={user_id}", ssl=ws_ssl,
             additional_headers={"Authorization": token}) as ws:
    with open(photo, "rb") as f:
        image_id = requests.post(f"{S}/{subject_id}/batches/{batch_id}/images/", headers=H, verify=verify,
                                 json={"side_id": 1, "light_id": 1,
                                       "b64data": base64.b64encode(f.read()).decode()}).json()["id"]
    print("Image", image_id, "- waiting for the notification...")
    print("Notification:", ws.recv(timeout=120))

I = f"{S}/{subject_id}/batches/{batch_id}/images/{image_id}"
for result in requests.get(f"{I}/results/", headers=H, verify=verify).json():
    alg = [a for a in algorithms if a["id"] == result["algorithm_version_id"]][0]
    print(f"{alg['algorithm_family']['name']} {alg['version']}: ok={result['is_ok']}")
for aux in requests.get(f"{I}/aux/", headers=H, verify=verify).json():
    url = f"{SAAS_HOST}/images/{aux['id']}.jpg?token={token}"
    size = len(requests.get(url, verify=verify).content)
    print("Segment:", aux["aux_image_type"]["name"], size, "bytes")

week_ago = (datetime.datetime.today() - datetime.timedelta(weeks=1)).date().isoformat()
history = requests.get(f"{S}/{subject_id}/all_results/", params={"date_from": week_ago},
                       headers=H, verify=verify).json()
print("History entries this week:", len(history))
smoothed = requests.get(f"{I}/smoothed_results/", headers=H, verify=verify,
                        params={"sample_time_window": 14, "sample_max_size": 10, "smoothing_method": "mean"}).json()
print("Smoothed:", json.dumps(smoothed)[:200])

pdf = requests.post(f"{SAAS_HOST}/service/pdf-generator/companies/{company_id}/datasets/{dataset_id}"
                    f"/subjects/{subject_id}/batches/{batch_id}/images/{image_id}/pdf/",
                    headers={"access-token": token}, json={"timeout": 30000, "waitUntil": "networkidle0"},
                    verify=verify)
# Into the temporary directory, so a run leaves nothing in the working tree.
pdf_path = os.path.join(tempfile.gettempdir(), f"skin_report_{image_id}.pdf")
with open(pdf_path, "wb") as f:
    f.write(pdf.content)
print("PDF report:", pdf.headers["content-type"], len(pdf.content), "bytes ->", pdf_path)

# The v3 flow: signed upload URL served by the appliance, PUT, compute, results.
V3 = f"{SAAS_HOST}/api/v3/companies/{company_id}"
up = requests.post(f"{V3}/subjects/{subject_id}/upload/", json={"front": "my_selfie.jpg", "meta": {}},
                   headers=H, verify=verify).json()
with open(photo, "rb") as f:
    requests.put(up["front"]["url"], headers=up["front"]["headers"], data=f.read(), verify=verify).raise_for_status()
requests.post(f"{V3}/batches/{up['image_batch_id']}/compute/", json={"app_args": None},
              headers=H, verify=verify).raise_for_status()
for _ in range(600):
    res = requests.get(f"{V3}/batches/{up['image_batch_id']}/results/", headers=H, verify=verify).json()
    if res["all_algorithms_calculated"]:
        break
    time.sleep(0.2)
print("v3 parameters:", sorted(res["face_skin_metrics_3"]["parameters"]))
print("Batches:", requests.get(f"{V3}/batches/", params={"page_size": 5}, headers=H, verify=verify).json()["count"])
