#!/usr/bin/env bash
# crl_partition.sh on PostgreSQL (schema step 13's PostgreSQL DDL, the partition queries, the
# insert transaction's count): the same checks with the store in a throwaway cluster.
CP_PG=1
source "$KL_SRC/tests/integration/crl_partition.sh"
