"""Signed S3 requests for the tests (moto refuses anonymous GET and PUT of objects).

usage: s3_tool.py get-all BUCKET PREFIX DEST   every object under PREFIX into DEST/<key>
       s3_tool.py put BUCKET KEY               stdin as the object KEY
The server and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
"""

import os
import sys

import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                  region_name=os.environ.get("AWS_REGION", "us-east-1"))
cmd, bucket = sys.argv[1], sys.argv[2]
if cmd == "get-all":
    prefix, dest = sys.argv[3], sys.argv[4]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            path = os.path.join(dest, o["Key"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
elif cmd == "put":
    s3.put_object(Bucket=bucket, Key=sys.argv[3], Body=sys.stdin.buffer.read())
else:
    sys.exit(f"unknown command {cmd}")
