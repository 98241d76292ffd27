"""`lab vm ARGS…`: run `lab ARGS…` inside a user-mode-linux guest that has real `tc netem`.

For hosts whose kernel has no `sch_netem` (hardened or managed kernels, CI runners): Debian's
`user-mode-linux` kernel boots in ~2 s with the host's `/` as a read-only hostfs root under a
tmpfs overlay, so the guest runs the host's own python, `lab` and tools; the run's results are
written back to the host through read-write hostfs mounts (docs/vm.md).

- `kernel`  where the UML kernel and its modules are, whether a guest can boot here
- `shim`    the LD_PRELOAD shim that lets UML 6.1 boot on AVX-512/AMX hosts (`fpshim.c`)
- `boot`    the guest's kernel command line and its two init stages (pure text)
- `console` splits the guest console into boot noise and the command's output (pure)
- `guest`   the agent inside the guest: runs the command, forwards output, Ctrl-C, exit code
- `host`    boots a guest for one command and always stops it again
- `compose` `lab compose run`: a scenario through docker-compose.yml's three containers
- `crosscheck`, `crossrun` the cross-validation of the emulator against tc netem
"""
