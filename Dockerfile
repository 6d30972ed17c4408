# The genaiops image: the approval server (`genaiops approval-server`, the approvals stack's service) and the flows'
# runs on the ECS work pool. Built by `cdk deploy` (a CDK image asset) and pushed to the stack's ECR repository:
# nothing is pulled from a public registry when a task starts. The pins are constraints.txt's; torch is its CPU
# build (the approval server and the flows call SageMaker for training and serving).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true GENAIOPS_WORKSPACE=/var/lib/genaiops
WORKDIR /opt/genaiops
COPY pyproject.toml constraints.txt README.md prefect.yaml ./
COPY configs configs
COPY contracts contracts
COPY local_aws local_aws
COPY model_registry model_registry
COPY monitoring monitoring
COPY pipelines pipelines
COPY serving serving
COPY steps steps
COPY infra_cdk infra_cdk
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt . \
    && useradd --uid 10001 --create-home genaiops && mkdir -p /var/lib/genaiops && chown genaiops /var/lib/genaiops
USER 10001
EXPOSE 5000
CMD ["genaiops", "approval-server"]
