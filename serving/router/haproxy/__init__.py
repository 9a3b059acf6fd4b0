"""The HAProxy engine: the router's configuration rendered as haproxy.cfg and run under `mct route`.

`render` maps a `RouterConfig` onto HAProxy's own features (active checks, passive ejection with
`observe layer7`, retries on another server, backup servers for tiers); `runtime` talks to HAProxy's
runtime API (stats socket); `control` answers the admin API from it; `engine` runs HAProxy in
master-worker mode, reloads it without dropping connections and stops it gracefully.
"""
