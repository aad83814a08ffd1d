# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS): drop the compiler's .comment section from
# the staged executables, as dh_strip does (CPACK_STRIP_FILES has already stripped them; strip
# keeps .comment, which lintian reports as binary-has-unneeded-section).
file(GLOB_RECURSE kl_staged LIST_DIRECTORIES false "${CPACK_TEMPORARY_INSTALL_DIRECTORY}/*")
foreach(f ${kl_staged})
  if(f MATCHES "/s?bin/[^/]+$")
    execute_process(COMMAND objcopy --remove-section=.comment "${f}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "objcopy --remove-section=.comment ${f} failed")
    endif()
  endif()
endforeach()
