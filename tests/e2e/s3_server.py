"""A real S3-compatible server for the e2e tests: moto's standalone server (PyPI
`moto[server]`) on a free loopback port, printed as one JSON line once it answers.

It serves one request at a time (werkzeug's `threaded=False`): moto checks `If-None-Match: *`
and then stores the object as two steps with no lock between them, so only a server that
handles requests one by one makes each conditional PUT atomic, as S3's is. (moto's own
`moto_server` runs threaded.)

With `--auth`, requests must be signed by a real IAM user's key: the first three requests
(create the user, its key and its policy) are the only unauthenticated ones, and the line
printed holds the key.
"""

import json
import os
import sys
import threading

AUTH = "--auth" in sys.argv
if AUTH:
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"

from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

server = make_server(
    "127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False
)
ready = {"port": server.server_port}
if AUTH:
    import boto3

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    iam = boto3.client(
        "iam",
        endpoint_url=f"http://127.0.0.1:{server.server_port}",
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="bdense")
    key = iam.create_access_key(UserName="bdense")["AccessKey"]
    iam.put_user_policy(
        UserName="bdense",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    ready.update(key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    print(json.dumps(ready), flush=True)
    thread.join()
else:
    print(json.dumps(ready), flush=True)
    server.serve_forever()
