# The apps' own metrics (keel-kv's commands and keyspace, keel-pool's
# pools) on keel's /metrics, checked with promtool against the work done;
# one run starts keel-kv, then PostgreSQL and keel-pool.
add_test(NAME integ/app_metrics
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/app_metrics.sh
          $<TARGET_FILE:keel-kv> $<TARGET_FILE:keel-pool> $<TARGET_FILE:pg_client>)
set_tests_properties(integ/app_metrics PROPERTIES LABELS "integ" TIMEOUT 300)
