#!/bin/sh
# Writes fresh random credentials for the kustomize secret generators (never committed; see
# .gitignore). Existing files are kept, so running it again does not rotate anything.
#   components/s3-credentials/s3.env              -> Secret entgan-s3 (MinIO, MLflow, pipeline pods)
#   components/postgres-credentials/postgres.env  -> Secret entgan-postgres (PostgreSQL, MLflow)
set -eu
cd "$(dirname "$0")/components"
umask 077
token() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
if [ -e s3-credentials/s3.env ]; then
  echo "keeping s3-credentials/s3.env"
else
  printf 'AWS_ACCESS_KEY_ID=entgan-%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$(token 4)" "$(token 24)" > s3-credentials/s3.env
  echo "wrote s3-credentials/s3.env"
fi
if [ -e postgres-credentials/postgres.env ]; then
  echo "keeping postgres-credentials/postgres.env"
else
  printf 'POSTGRES_PASSWORD=%s\n' "$(token 24)" > postgres-credentials/postgres.env
  echo "wrote postgres-credentials/postgres.env"
fi
