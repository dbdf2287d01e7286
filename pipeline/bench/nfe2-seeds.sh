#!/bin/bash
# Two more seeds at NFE 2 (N = 4), the paper's headline cell, same settings as the demo's.
cd "${1:-runs}"   # the directory `bdense demo --out DIR/demo` used (models/ reachable from it)
B=${BDENSE:-bdense}
k() { [ "$1" = bdense ] && echo "--k 4"; }  # SFD has its one branch
t() { $B train demo/store/fashion-mnist --method $1 --n 4 $(k $1) --steps 100 --batch 16 --seed $2 --checkpoint-every 100 --out demo/runs/$1-n4-s$2; }
start=$(date +%s)
t sfd 1 & t bdense 1 & wait
t sfd 2 & t bdense 2 & wait
$B eval demo/runs/sfd-n4-s0 demo/runs/sfd-n4-s1 demo/runs/sfd-n4-s2 demo/runs/bdense-n4-s0 demo/runs/bdense-n4-s1 demo/runs/bdense-n4-s2 --count 256
$B report demo/runs/*-n4-s* --out demo/report-nfe2
echo "seeds done in $(( $(date +%s) - start ))s"
