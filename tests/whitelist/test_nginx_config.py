"""The compiled files pass `nginx -t` in a complete config that includes both, as the role's nginx.conf does,
whichever kinds of backends the whitelist has (found by make demo: an http-only whitelist once broke stream)."""

import subprocess

import pytest
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import compile_nginx, load
from test_nginx_decides import NGINX, free_port

BACKENDS = {
    "http": {"protocol": "http", "upstreams": ["127.0.0.1:9"]},
    "stream": {"protocol": "stream", "upstreams": ["127.0.0.1:9"]},
}


@pytest.mark.parametrize("kinds", [["http"], ["stream"], ["http", "stream"]], ids="+".join)
def test_compiled_tree_passes_nginx_t(tmp_path, kinds):
    backends = {f"{kind}-app": dict(BACKENDS[kind], listen=free_port()) for kind in kinds}
    whitelist = load(
        [
            (
                "w.yml",
                {
                    "groups": {"office": {"cidrs": ["198.51.100.0/24"]}},
                    "backends": backends,
                    "rules": [{"backend": name, "groups": ["office"]} for name in backends],
                },
            )
        ]
    )
    for name, text in compile_nginx(whitelist, access_log=str(tmp_path / "decisions.log")).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "nginx.conf").write_text(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ include {tmp_path}/http.conf; }}\nstream {{ include {tmp_path}/stream.conf; }}\n"
    )
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
