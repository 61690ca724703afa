# keel-kv persistence (apps/kv/persist.c, snapshot.c): kill -9 under load
# with appendfsync always / everysec, snapshot consistency per shard under
# concurrent writes, BGREWRITEAOF while serving, damaged AOF tails, a full
# disk (a small tmpfs: needs mount, else the test is skipped, exit 77),
# save rules and the final snapshot at shutdown with appendonly no.
# kv_writer records every write keel-kv acknowledged and checks them after
# a restart.
add_executable(kv_writer ${CMAKE_CURRENT_SOURCE_DIR}/kv_writer.c)
target_compile_options(kv_writer PRIVATE ${KEEL_WARNINGS})
foreach(name always everysec snapshot corrupt diskfull saverules)
  add_test(NAME integ/kv_persist_${name}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/kv_persist_${name}.sh $<TARGET_FILE:keel-kv> $<TARGET_FILE:kv_writer>)
  # Quick and meaningful under the sanitizers: loading (damaged files),
  # the disk-full path and its recovery, the crash paths.
  if(name MATCHES "^(corrupt|diskfull|always|saverules)$")
    set_tests_properties(integ/kv_persist_${name} PROPERTIES LABELS "integ;asan" TIMEOUT 180 SKIP_RETURN_CODE 77)
  else()
    set_tests_properties(integ/kv_persist_${name} PROPERTIES LABELS "integ" TIMEOUT 180 SKIP_RETURN_CODE 77)
  endif()
endforeach()
