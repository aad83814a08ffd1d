#!/usr/bin/env bash
# cad_multi.sh on PostgreSQL (issue 13 item 3): two keyline-cad daemons on one PostgreSQL
# database (a throwaway cluster, tests/lib/pg.sh) serve two keyline-estd and two stations at
# once; the same checks (serials unique, every certificate recorded, CRL numbers strictly
# increasing whichever daemon signs, one identity per device, approval across daemons, audit).
CM_PG=1
source "$KL_SRC/tests/integration/cad_multi.sh"
