# keel-top: its Prometheus text parser on known cases and 200,000 garbage
# inputs (label asan: the sanitizer build catches any overread), and the
# tool itself against a real keel-echo, in a tmux terminal (keel_top.sh).
add_executable(keel_top_prom_test ${CMAKE_SOURCE_DIR}/tools/prom_test.c ${CMAKE_SOURCE_DIR}/tools/prom.c)
target_include_directories(keel_top_prom_test PRIVATE ${CMAKE_SOURCE_DIR}/tools)
target_compile_options(keel_top_prom_test PRIVATE ${KEEL_WARNINGS})
target_link_libraries(keel_top_prom_test PRIVATE m)
add_test(NAME unit/keel_top_prom COMMAND keel_top_prom_test)
set_tests_properties(unit/keel_top_prom PROPERTIES LABELS "unit;asan" TIMEOUT 120)

add_test(NAME integ/keel_top
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/keel_top.sh $<TARGET_FILE:keel-top> $<TARGET_FILE:keel-echo>)
set_tests_properties(integ/keel_top PROPERTIES LABELS "integ;asan" TIMEOUT 120)
