"""The local twin: what stands in for AWS services on a laptop, and nothing the platform needs on AWS.

A local SageMaker control plane (SageMaker's JSON API for models, endpoint configs and endpoints, with blue/green
deployments and their guardrails) that also answers SageMaker Runtime's invocations, over local endpoint processes:
a router per endpoint in front of one model-server process per variant, each serving its package through the
package's own `code/inference.py`, as SageMaker's container would.

Nothing above the twin knows it is here: only the backend factory (`pipelines/backends.py`) starts it and hands out
boto3 clients and URLs that reach it; a test over the import graph keeps it so.
"""
