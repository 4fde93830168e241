# Sourced by the bench scripts, from the repository's root: a work directory and the list of
# the servers they start, removed and killed on exit; waiting for a server to answer; a token
# from a `/login`; the median of a list of numbers.
# shellcheck shell=bash
work=$(mktemp -d)
pids=()
# The servers are waited for before the directory goes: one still writing there (callgrind's
# last dump) would leave it behind.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# wait_up URL: until URL answers 2xx (10 s at most), else the script ends.
wait_up() {
  for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 never came up" >&2
  exit 1
}

# token_of BASE_URL HEADER: the access token a POST to BASE_URL/login with HEADER answers.
token_of() { curl -s -X POST -H "$2" "$1/login" | sed 's/.*"access_token":"\([^"]*\)".*/\1/'; }

# median "N N N…": the middle number, or the mean of the two middle ones.
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
