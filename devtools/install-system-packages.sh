#!/usr/bin/env bash
# Installs the Debian packages respaldo needs, only those missing (the machine may be fresh).
#   client tools the copies run:   postgresql-client (pg_dump, pg_restore, psql), mariadb-client, zstd,
#                                   openssh-client
#   building mysqlclient (pip):    default-libmysqlclient-dev, pkg-config
#   the tests' real servers:       postgresql, mariadb-server (throwaway instances), openssh-server,
#                                   redis-server (the Celery broker of the CeleryExecutor test);
#                                   strace (no-I/O checks)
#   encrypted copies:              age (decrypts for `respaldo verificar/restaurar --identidad`, drills, tests)
#   checking docker-compose.yaml:  docker-compose (no engine needed for `config`)
#   the FT-GTI-004 sheet and pages: fonts-dejavu-core (the PDF's Unicode font: accents and ñ);
#                                   the browser test: chromium (driven by Playwright, which never
#                                   downloads a browser of its own), poppler-utils (pdftotext)
set -euo pipefail
packages=(postgresql postgresql-client mariadb-client mariadb-server zstd openssh-client openssh-server strace
          default-libmysqlclient-dev pkg-config docker-compose python3-venv fonts-dejavu-core chromium
          poppler-utils age redis-server)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "Installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
