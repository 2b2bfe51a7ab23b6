#!/usr/bin/perl
# The version, one string (LLMR_VERSION of core/llmr.h) in four places:
# $llm_router_version, the "llm_router/VERSION" notice of the error log
# at start, llm-router --version, and packaging/debian/changelog.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(slurp);

my ($version) = slurp("$LLMRouterTest::REPO/ngx_http_llm_router_module/core/llmr.h")
    =~ /^#define LLMR_VERSION\s+"([^"]+)"$/m;
ok defined $version, 'LLMR_VERSION in core/llmr.h';

my ($deb) = slurp("$LLMRouterTest::REPO/packaging/debian/changelog") =~ /\A\S+ \(([^)]+)\)/;
is $deb, $version, 'the version of packaging/debian/changelog';

is `$LLMRouterTest::BUILD/llm-router --version`, "llm-router $version\n",
   'llm-router --version';

my $t = LLMRouterTest->new;
$t->config(<<'EOF')->run;
server {
    listen 127.0.0.1:%%PORT%%;
    location = /version {
        return 200 $llm_router_version;
    }
}
EOF

is $t->http(path => '/version')->{body}, $version, '$llm_router_version';
like $t->error_log, qr{ \[notice\] \d+#\d+: llm_router/\Q$version\E$}m,
     'the version in the error log at start';

$t->stop;
done_testing;
