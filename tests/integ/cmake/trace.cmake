# --trace FILE on keel-kv under redis-cli traffic: the JSON written at exit
# has a track per shard and paired flows for cross-shard messages.
add_test(NAME integ/trace COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/trace.sh $<TARGET_FILE:keel-kv>)
set_tests_properties(integ/trace PROPERTIES LABELS "integ;asan" TIMEOUT 120)
