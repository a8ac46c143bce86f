# Shared by the install scripts (sourced, not run). `forced NAME` is true when CI_CACHE_FORCE_INSTALL names
# NAME (comma separated, or `all`): the script then takes its install path even when the server is there.
forced() {
  case ",${CI_CACHE_FORCE_INSTALL:-}," in
    *",$1,"* | *",all,"*) return 0 ;;
    *) return 1 ;;
  esac
}
