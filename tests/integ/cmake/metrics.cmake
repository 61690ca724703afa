# The /metrics server (and /trace/*) on keel-echo, both backends.
foreach(backend uring epoll)
  add_test(NAME integ/metrics@${backend}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/metrics.sh ${backend}
            $<TARGET_FILE:keel-echo> $<TARGET_FILE:echo_client>)
  set_tests_properties(integ/metrics@${backend} PROPERTIES LABELS "integ;asan" TIMEOUT 180)
endforeach()
