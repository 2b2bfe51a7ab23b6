#!/usr/bin/perl
# The window of text the router reads (llm_router_scan_limit, 16k by
# default): of a text longer than it, its first and last halves; a
# keyword or code in the middle of a long pasted document does not
# change the route, one at either end does.  The tokens of the middle
# are counted at the window's rate, close to what reading it all gives.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(route_of);

plan tests => 7;

my $t = LLMRouterTest->new;
$t->mock($_) for qw(mini large);
$t->config(<<'EOF')->run;
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; auth none; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      auth none; }

llm_router_keywords complex "compare";

log_format tokens '$llm_router_est_tokens';

server {
    listen 127.0.0.1:%%PORT%%;
    client_body_buffer_size 1m;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_rule code     code              large;
        llm_router_rule complex  keywords=complex  large;
        llm_router_default mini;
        access_log %%PREFIX%%/window.log tokens;
        proxy_pass $llm_router_url;
    }

    location = /all {
        llm_router on;
        llm_router_scan_limit 0;
        llm_router_rule code     code              large;
        llm_router_rule complex  keywords=complex  large;
        llm_router_default mini;
        access_log %%PREFIX%%/all.log tokens;
        proxy_pass $llm_router_url;
    }

    location = /small {
        llm_router on;
        llm_router_scan_limit 2k;
        llm_router_rule complex  keywords=complex  large;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
}
EOF

# about 40 KB of plain prose, with $insert at byte $at
sub doc {
    my ($insert, $at) = @_;
    my @w = qw(the truck left the depot at noon.);
    my $text = join ' ', map { $w[$_ % @w] } 1 .. 8000;
    substr($text, $at, 0) = " $insert " if defined $insert;
    return $text;
}

sub go {
    my ($path, $text) = @_;
    return route_of($t->ask($text, path => $path));
}

my $len = length doc();

is_deeply [map { go('/v1/chat/completions', $_) }
               doc('compare', 20000), doc('compare', 100), doc('compare', $len - 100)],
          ['mini/default', 'large/complex', 'large/complex'],
          'a keyword in the middle of 40 KB is not read; at its head or its tail it is';

is go('/all', doc('compare', 20000)), 'large/complex',
   'llm_router_scan_limit 0: the whole text is read';

is go('/small', doc('compare', 3000)), 'mini/default',
   'llm_router_scan_limit 2k: a keyword 3 KB in is outside the window';

my $code = "```\nint main(void) {\n    return 0;\n}\n```";

is_deeply [map { go('/v1/chat/completions', $_) } doc($code, 20000), doc($code, 50)],
          ['mini/default', 'large/code'],
          'code in the middle of a long text is not read, at its head it is';

# the estimate of the long text, windowed or not: within 3%

go('/v1/chat/completions', doc());
go('/all', doc());

my ($windowed) = $t->read_file('window.log') =~ /(\d+)\n\z/;
my ($all) = $t->read_file('all.log') =~ /(\d+)\n\z/;

ok $windowed && $all && $windowed != $all && abs($windowed - $all) / $all <= 0.03,
   "the tokens of 40 KB: " . ($windowed // '?') . " counted by the window, "
   . ($all // '?') . " by reading it all";

my ($out) = $t->config_error('llm_router_model a { url http://127.0.0.1:1/; auth none; }',
                             'llm_router_scan_limit 512;');
is $out, '"llm_router_scan_limit" directive must be 0 or at least 1k in nginx.conf:N',
   'nginx -t: a window smaller than 1k';
