# Shared by the benchmark scripts (sourced, not run): the local s3s-fs server
# and the workers' metrics of a loadtest/scripts/cluster.sh cluster.

# Starts s3s-fs (installed by loadtest/scripts/peers.sh) on 127.0.0.1:PORT,
# serving a fresh DIR; sets S3_PID and exports KS_S3_ENDPOINT for cluster.sh.
start_s3s_fs() { # port dir
  rm -rf "$2" && mkdir -p "$2"
  "${KS_PEERS_DIR:-$HOME/.cache/kafscale-peers}/bin/s3s-fs" --host 127.0.0.1 --port "$1" \
    --access-key k --secret-key s "$2" >/dev/null 2>&1 &
  S3_PID=$!
  export KS_S3_ENDPOINT=http://127.0.0.1:$1
  sleep 1
}

# The /metrics of the cluster's first N workers, one after the other.
worker_metrics() { # n
  local i
  for i in $(seq 0 $(($1 - 1))); do curl -s "http://127.0.0.1:$((22500 + i))/metrics"; done
}
