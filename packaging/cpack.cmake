# CPack: the Debian packages scripts/package builds (docs/packaging.md says why CPack DEB and
# not a debian/ folder). Two packages from the install components:
#   keyline         keyline-ca, keyline-cad, keyline-estd, keyline-provision, templates, units,
#                   sysusers.d / tmpfiles.d, example /etc/keyline/keyline.conf (conffile), man
#                   pages, bash completion, docs
#   keyline-devsim  the device simulator alone: it prints private keys on request, so it has no
#                   place on a production host and must be installable (and purgeable) apart.
# Configure with -DCMAKE_INSTALL_PREFIX=/usr (scripts/package does): the compiled-in defaults
# (/etc/keyline/keyline.conf, /usr/share/keyline/templates) follow the prefix.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME keyline)
set(CPACK_PACKAGE_VENDOR "keyline developers")
# Maintainer (control file and changelog.Debian): a real address for packages that leave the
# building; lintian refuses a .local host.
set(KEYLINE_DEB_MAINTAINER "keyline developers <dev@keyline.example>" CACHE STRING
  "Maintainer of the Debian packages")
set(CPACK_PACKAGE_CONTACT "${KEYLINE_DEB_MAINTAINER}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_PRE_BUILD_SCRIPTS ${CMAKE_CURRENT_LIST_DIR}/deb/strip-comment.cmake)
set(CPACK_COMPONENTS_ALL keyline devsim)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# the Debian revision: bump it (and packaging/deb/changelog.in) for a packaging-only change
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends from the ELF files' shared libraries (dpkg-shlibdeps, package dpkg-dev)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_KEYLINE_PACKAGE_NAME keyline)
set(CPACK_DEBIAN_KEYLINE_PACKAGE_SECTION admin)
# a PKCS#11 module for the CA keys (SoftHSM2 for tests and small set-ups, else the HSM
# vendor's), pkcs11-tool / p11tool to look into the token
set(CPACK_DEBIAN_KEYLINE_PACKAGE_SUGGESTS "softhsm2, opensc, gnutls-bin")
set(CPACK_COMPONENT_KEYLINE_DESCRIPTION
  "PKCS#11-backed certificate authority for IoT device identities
keyline issues and manages device certificates with CA keys that never
leave a PKCS#11 token: a CA service (keyline-cad) that alone holds the
token PIN and the certificate store, the security officer's tool
(keyline-ca), an EST enrollment server for devices in the field
(keyline-estd, RFC 7030) and a factory provisioning station
(keyline-provision) that gives every device an IEEE 802.1AR identity over
its serial line. Every certificate goes through one issuance pipeline and
is recorded with a tamper-evident audit log.")
set(CPACK_DEBIAN_KEYLINE_PACKAGE_CONTROL_EXTRA
  ${CMAKE_BINARY_DIR}/packaging/deb/postinst ${CMAKE_SOURCE_DIR}/packaging/deb/prerm
  ${CMAKE_SOURCE_DIR}/packaging/deb/postrm ${CMAKE_BINARY_DIR}/packaging/deb/conffiles)

set(CPACK_DEBIAN_DEVSIM_PACKAGE_NAME keyline-devsim)
set(CPACK_DEBIAN_DEVSIM_PACKAGE_SECTION devel)
set(CPACK_COMPONENT_DEVSIM_DESCRIPTION
  "simulated keyline device for tests and demonstrations
keyline-devsim plays a device on a serial port or pty for the keyline
factory station (keyline-provision): it generates its key, answers the
line protocol, stores its certificates and can misbehave on purpose. It
prints its private key on request, so it does not belong on a production
host.")

include(CPack)
