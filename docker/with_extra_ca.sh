#!/bin/sh
# Build helper (bind-mounted into RUN steps, never copied into the image): runs a command
# that downloads (pip, Keras) trusting one extra PEM bundle on top of the system CAs --
# the optional build secret `extra_ca`, for builds behind a TLS-intercepting proxy.
# The combined bundle lives in a temporary file deleted on exit, so nothing of the
# certificate ends up in a layer or in the image's environment.
set -eu
secret=/run/secrets/extra_ca
if [ -s "$secret" ]; then
    bundle=$(mktemp)
    trap 'rm -f "$bundle"' EXIT
    cat /etc/ssl/certs/ca-certificates.crt "$secret" > "$bundle"
    export PIP_CERT="$bundle" SSL_CERT_FILE="$bundle" REQUESTS_CA_BUNDLE="$bundle" CURL_CA_BUNDLE="$bundle"
fi
"$@"
