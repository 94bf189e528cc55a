#!/bin/bash
# Cluster init script of the prod-kerberos target: python-gssapi for PIDELTA_PI_AUTH=kerberos.
# It builds against MIT Kerberos (no Linux wheel exists), so the headers come first.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libkrb5-dev libgssapi-krb5-2 gcc
/databricks/python/bin/pip install --quiet 'gssapi>=1.8'
