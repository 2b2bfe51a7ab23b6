#!/usr/bin/perl
# Pinning: a body "model" naming a configured model (by its name or its
# upstream model) is honoured with rule "client" unless llm_router_pin off.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(user words);

my $t = LLMRouterTest->new;
$t->mock($_) for qw(mini large);
$t->config(<<'EOF')->run;
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; auth none; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      auth none; }

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_rule long tokens>2000 large;
        llm_router_default mini;
        access_log %%PREFIX%%/pin.log llm;
        proxy_pass $llm_router_url;
    }

    location = /nopin {
        llm_router on;
        llm_router_pin off;
        llm_router_rule long tokens>2000 large;
        llm_router_default mini;
        proxy_pass $llm_router_url;
    }
}
EOF

my $short = 'hi';
my $long = words(3000);

# [name, path, model (undef: absent), text, expected route]
my @cases = (
    ['pinned by model name', '/v1/chat/completions', 'large', $short, 'large/client@large:gpt-4o'],
    ['pinned by upstream model', '/v1/chat/completions', 'gpt-4o', $short, 'large/client@large:gpt-4o'],
    ['pin beats the rules', '/v1/chat/completions', 'mini', $long, 'mini/client@mini:gpt-4o-mini'],
    ['pin by upstream beats the rules', '/v1/chat/completions', 'gpt-4o-mini', $long,
     'mini/client@mini:gpt-4o-mini'],
    ['"auto" is routed', '/v1/chat/completions', 'auto', $long, 'large/long@large:gpt-4o'],
    ['"auto" short goes to the default', '/v1/chat/completions', 'auto', $short,
     'mini/default@mini:gpt-4o-mini'],
    ['absent model is routed', '/v1/chat/completions', undef, $short, 'mini/default@mini:gpt-4o-mini'],
    ['unknown model is routed', '/v1/chat/completions', 'claude-9', $short,
     'mini/default@mini:gpt-4o-mini'],
    ['model names match exactly', '/v1/chat/completions', 'LARGE', $short,
     'mini/default@mini:gpt-4o-mini'],
    ['pin off: name is routed', '/nopin', 'large', $short, 'mini/default@mini:gpt-4o-mini'],
    ['pin off: upstream name is routed', '/nopin', 'gpt-4o', $short, 'mini/default@mini:gpt-4o-mini'],
    ['pin off: rules still apply', '/nopin', 'mini', $long, 'large/long@large:gpt-4o'],
);

plan tests => @cases + 3 + 1;

for my $c (@cases) {
    my ($name, $path, $model, $text, $want) = @$c;
    my %body = (messages => [user($text)], defined $model ? (model => $model) : ());
    is $t->route(path => $path, body => \%body), $want, $name;
}

# the access log of the pinned location saw the first 9 requests
my @log = $t->access_log_records('pin.log', 9);
is scalar @log, 9, 'one log record per request';
is_deeply [map { $_->{rule} } @log[0 .. 3]], [('client') x 4], 'pinned requests log rule "client"';
is_deeply [map { "$_->{model}/$_->{upstream_model}" } @log[0, 2]],
          ['large/gpt-4o', 'mini/gpt-4o-mini'], 'pinned requests log their model';

$t->stop;
