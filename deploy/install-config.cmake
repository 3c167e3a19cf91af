# Run by `cmake --install` (an install(CODE) rule of the root CMakeLists.txt) to install the
# sample config where evdal.service reads it. The unit's ConfigurationDirectory=evdal is always
# /etc/evdal, whatever the prefix, so like GNUInstallDirs the prefix /usr (the one Debian
# packages and CPack use) puts it in /etc, not /usr/etc. The prefix is only known now: it may
# be `cmake --install --prefix`, not the one configured.
#
# In: EVDAL_CONF_FILE (the config to install), EVDAL_CONFDIR_SET (-DEVDAL_CONFDIR=, may be
# empty), EVDAL_SYSCONFDIR (CMAKE_INSTALL_SYSCONFDIR). Out: EVDAL_CONFDIR, for the unit.
if(EVDAL_CONFDIR_SET)
  set(EVDAL_CONFDIR "${EVDAL_CONFDIR_SET}")
elseif(IS_ABSOLUTE "${EVDAL_SYSCONFDIR}")
  set(EVDAL_CONFDIR "${EVDAL_SYSCONFDIR}/evdal")
elseif(CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
  set(EVDAL_CONFDIR "/etc/evdal")
else()
  set(EVDAL_CONFDIR "${CMAKE_INSTALL_PREFIX}/${EVDAL_SYSCONFDIR}/evdal")
endif()

# An operator's edited config is never replaced: the new sample goes beside it, as
# evdal.conf.new, the way dpkg leaves a conffile's new version as .dpkg-dist. (file(INSTALL)
# adds DESTDIR itself; the check here must add it by hand.)
set(_evdal_conf "$ENV{DESTDIR}${EVDAL_CONFDIR}/evdal.conf")
if(EXISTS "${_evdal_conf}")
  file(SHA256 "${_evdal_conf}" _evdal_old)
  file(SHA256 "${EVDAL_CONF_FILE}" _evdal_new)
  if(NOT _evdal_old STREQUAL _evdal_new)
    message(STATUS "Keeping: ${_evdal_conf} (it was changed; the new sample is evdal.conf.new)")
    file(INSTALL DESTINATION "${EVDAL_CONFDIR}" TYPE FILE
         RENAME evdal.conf.new FILES "${EVDAL_CONF_FILE}")
    return()
  endif()
endif()
file(INSTALL DESTINATION "${EVDAL_CONFDIR}" TYPE FILE FILES "${EVDAL_CONF_FILE}")
