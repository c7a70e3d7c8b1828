# syntax=docker/dockerfile:1
# The MLflow tracking server of manifests/base: mlflow plus the PostgreSQL driver and boto3 (for
# artifacts proxied to MinIO). The official MLflow image has neither driver. Build context: the
# repo root (versions come from requirements.lock).
#
#   docker build -f images/mlflow.Dockerfile -t <registry>/mlflow:3.17.2 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/mlflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/mlflow \
 && pip install -c /tmp/requirements.lock mlflow==3.17.2 boto3==1.44.5 psycopg2-binary==2.9.13 \
 && rm /tmp/requirements.lock \
 && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin mlflow
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
