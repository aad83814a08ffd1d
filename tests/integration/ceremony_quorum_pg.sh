# ceremony_quorum.sh with the store on PostgreSQL (a throwaway cluster, tests/lib/pg.sh): the
# officers, ceremonies and approvals tables and their rules on the second driver.
CQ_PG=1
source "$KL_SRC/tests/integration/ceremony_quorum.sh"
