#!/usr/bin/env bash
# testbed/fuzz.sh: run every native Go fuzz target of the repository
# (`make fuzz`, docs/FUZZING.md).
#
# Targets are found by grepping *_test.go files for `^func Fuzz`, so a new
# target is picked up without editing this script. Each runs as
#   go test -run '^$' -fuzz '^Name$' -fuzztime $FUZZTIME -parallel=1 \
#     -fuzzminimizetime $FUZZMINIMIZETIME ./pkg
# from the module that holds it (one core per target), at most FUZZPAR at a
# time. The fuzz cache stays where Go keeps it ($GOCACHE/fuzz).
#
# Environment:
#   FUZZTIME   time per target (go test -fuzztime): default 10m
#   FUZZPAR    targets run at the same time: default 2
#   FUZZ       extended regexp: only targets whose "pkg.Name" matches
#   FUZZMINIMIZETIME  go test -fuzzminimizetime: default 5s. Go minimizes
#              every new interesting input (and a crasher) for up to 60s by
#              default, and the execs it spends there are not counted: in
#              a 20 s run that left some targets at a few dozen execs.
#   FUZZTIMEOUT go test -timeout: default FUZZTIME plus 10 minutes (go
#              test's own default, 10m, would stop a 10m run), none when
#              FUZZTIME is not a plain number of s, m or h
#   FUZZLOGDIR where each target's output goes: default test-output/fuzz
#   GO         the go command: default go
#
# Exit status: 0 when every target passed; 1 when one failed (a crasher,
# which go test writes to the package's testdata/fuzz/<Name>/, or a build
# failure); the summary names each failing target and its crasher.
#
# A target that fails with nothing but "context deadline exceeded" and no
# failing input is reported as FLAKE and does not fail the run: that is a
# race in Go's fuzzing coordinator at the end of -fuzztime, not an input
# (go.dev/issue/75804, fixed in Go 1.27; this module uses Go 1.26).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

FUZZTIME=${FUZZTIME:-10m}
FUZZPAR=${FUZZPAR:-2}
FUZZ=${FUZZ:-}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
GO=${GO:-go}
if [ -z "${FUZZTIMEOUT:-}" ]; then
	case $FUZZTIME in
	*[!0-9smh]* | *[smh]*[0-9smh]* | [smh]*) FUZZTIMEOUT=0 ;;
	*s) FUZZTIMEOUT=$((${FUZZTIME%s} + 600))s ;;
	*m) FUZZTIMEOUT=$((${FUZZTIME%m} * 60 + 600))s ;;
	*h) FUZZTIMEOUT=$((${FUZZTIME%h} * 3600 + 600))s ;;
	*) FUZZTIMEOUT=0 ;;
	esac
fi
logdir=${FUZZLOGDIR:-test-output/fuzz}
case $FUZZPAR in '' | *[!0-9]* | 0)
	echo "fuzz: FUZZPAR must be a positive number, got '$FUZZPAR'" >&2
	exit 2
	;;
esac
mkdir -p "$logdir"
logdir=$(cd "$logdir" && pwd)

# modroot DIR: the nearest directory at or above DIR holding a go.mod.
modroot() {
	local d=$1
	while [ "$d" != / ] && [ ! -f "$d/go.mod" ]; do d=$(dirname "$d"); done
	echo "$d"
}

# targets: lines "moddir<TAB>./pkgdir<TAB>Name", sorted.
targets=()
while IFS=: read -r file name; do
	dir=$(dirname "$root/${file#./}")
	mod=$(modroot "$dir")
	rel=${dir#"$mod"}
	pkg=.${rel:-}
	[ "$pkg" = . ] && pkg=./.
	if [ -n "$FUZZ" ] && ! [[ "${pkg#./}.$name" =~ $FUZZ ]]; then continue; fi
	targets+=("$mod"$'\t'"$pkg"$'\t'"$name")
done < <(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*\(' . \
	--exclude-dir=.git --exclude-dir=bin --exclude-dir=test-output --exclude-dir=node_modules |
	sed -E 's/^([^:]*):func (Fuzz[A-Za-z0-9_]*)\($/\1:\2/' | sort -t: -k1,1 -k2,2)

if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets${FUZZ:+ match FUZZ=$FUZZ}" >&2
	exit 2
fi
echo "fuzz: ${#targets[@]} targets, FUZZTIME=$FUZZTIME each, $FUZZPAR at a time, -parallel=1, FUZZMINIMIZETIME=$FUZZMINIMIZETIME; logs in ${logdir#"$root"/}"

# run_one MOD PKG NAME: fuzz one target; writes its log and a result line
# "result<TAB>execs<TAB>new<TAB>crasher" to $logdir/<id>.result.
run_one() {
	local mod=$1 pkg=$2 name=$3
	local id
	id=$(echo "${mod#"$root"}/${pkg#./}.$name" | sed -E 's#^/+##; s#[/.]+#_#g')
	local log=$logdir/$id.log
	local start=$SECONDS rc=0
	(cd "$mod" && "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -parallel=1 -fuzzminimizetime "$FUZZMINIMIZETIME" -timeout "$FUZZTIMEOUT" "$pkg") >"$log" 2>&1 || rc=$?
	# The last progress line holds the totals:
	# "fuzz: elapsed: 20s, execs: 123456 (6172/sec), new interesting: 3 (total: 40)"
	local last execs=- new=- result crasher=-
	last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -n 1 || true)
	if [ -n "$last" ]; then
		execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")
		new=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
		new=${new:-0}
	fi
	if [ $rc -eq 0 ]; then
		result=PASS
	elif grep -q 'Failing input written to' "$log"; then
		result=CRASH
		crasher=$(sed -nE 's/.*Failing input written to (.*)$/\1/p' "$log" | tail -n 1)
		local pkgdir=$mod/${pkg#./}
		crasher=${pkgdir#"$root"/}/$crasher
	elif grep -A1 -E "^--- FAIL: $name " "$log" | grep -qxE '\s*context deadline exceeded'; then
		result=FLAKE # go.dev/issue/75804: see the top of this file
	elif grep -qE '^--- FAIL|^FAIL' "$log"; then
		result=FAIL
	else
		result=ERROR
	fi
	printf '%s\t%s\t%s\t%s\n' "$result" "$execs" "$new" "$crasher" >"$logdir/$id.result"
	local where="${mod#"$root"}"
	where=${where:+${where#/}/}${pkg#./}
	printf 'fuzz: %-5s %-28s %-44s execs=%-11s new_interesting=%-5s %ds%s\n' \
		"$result" "$name" "$where" "$execs" "$new" $((SECONDS - start)) \
		"$([ "$crasher" != - ] && echo " crasher=$crasher")"
	if [ "$result" = FLAKE ]; then
		echo "fuzz: $name: \"context deadline exceeded\" at the end of -fuzztime and no failing input: Go's fuzzing coordinator race (go.dev/issue/75804), not counted as a failure"
	elif [ "$result" != PASS ]; then
		echo "fuzz: $name: last lines of ${log#"$root"/}:"
		tail -n 25 "$log" | sed 's/^/    /'
	fi
}

ids=()
running=0
for t in "${targets[@]}"; do
	IFS=$'\t' read -r mod pkg name <<<"$t"
	ids+=("$(echo "${mod#"$root"}/${pkg#./}.$name" | sed -E 's#^/+##; s#[/.]+#_#g')")
	rm -f "$logdir/${ids[-1]}.result"
	if [ "$running" -ge "$FUZZPAR" ]; then
		wait -n || true
		running=$((running - 1))
	fi
	run_one "$mod" "$pkg" "$name" &
	running=$((running + 1))
done
wait || true

# Summary table, in discovery order.
failed=0
flaked=0
total_execs=0
echo
echo "fuzz: summary (FUZZTIME=$FUZZTIME per target)"
printf '%-6s %-30s %-46s %12s %8s  %s\n' RESULT TARGET PACKAGE EXECS NEW CRASHER
i=0
for t in "${targets[@]}"; do
	IFS=$'\t' read -r mod pkg name <<<"$t"
	id=${ids[$i]}
	i=$((i + 1))
	where="${mod#"$root"}"
	where=${where:+${where#/}/}${pkg#./}
	if [ -f "$logdir/$id.result" ]; then
		IFS=$'\t' read -r result execs new crasher <"$logdir/$id.result"
	else
		result=ERROR execs=- new=- crasher=-
	fi
	case $result in
	PASS) ;;
	FLAKE) flaked=$((flaked + 1)) ;;
	*) failed=$((failed + 1)) ;;
	esac
	[[ "$execs" =~ ^[0-9]+$ ]] && total_execs=$((total_execs + execs))
	printf '%-6s %-30s %-46s %12s %8s  %s\n' "$result" "$name" "$where" "$execs" "$new" "$([ "$crasher" != - ] && echo "$crasher")"
done
echo "fuzz: ${#targets[@]} targets, $((${#targets[@]} - failed - flaked)) passed, $failed failed, $flaked flaked (go.dev/issue/75804), $total_execs execs in all, $((SECONDS / 60))m$((SECONDS % 60))s"
if [ $failed -gt 0 ]; then
	echo "fuzz: FAILED. A crasher is written by go test to <package>/testdata/fuzz/<Name>/<hash>;"
	echo "      reproduce it with: go test -run '^<Name>/<hash>\$' ./<package>"
	echo "      keep it (git add) as a regression input once the bug is fixed. Logs: ${logdir#"$root"/}/"
	exit 1
fi
