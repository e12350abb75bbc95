# Shared by the bench scripts (sourced): wrk runs recorded per contender, and their medians.
# Needs WORK, THREADS, CONNECTIONS, DURATION and KEY (sent as the bearer).

# us VALUE: a wrk latency (12.3us, 1.2ms, 1.1s) in microseconds.
us() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'; }
# load NAME URL: one wrk run; appends "rps p50_us p99_us non2xx" to $WORK/r-NAME.
load() {
  local name=$1 url=$2 out="$WORK/$1.wrk"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $KEY" "$url" >"$out"
  echo "$(awk '/Requests\/sec/ {print $2}' "$out") $(us "$(awk '$1=="50%" {print $2}' "$out")") \
$(us "$(awk '$1=="99%" {print $2}' "$out")") $(awk '/Non-2xx/ {print $5}' "$out" | grep . || echo 0)" >>"$WORK/r-$name"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# col NAME N: the median of column N over NAME's runs.
col() { awk -v c="$2" '{ print $c }' "$WORK/r-$1" | median; }
