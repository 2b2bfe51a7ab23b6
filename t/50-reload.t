#!/usr/bin/perl
# Reload: a HUP brings in new models, rules and a re-read key_file.

use strict;
use warnings;

use Test::More tests => 5;
use LLMRouterTest;

my $t = LLMRouterTest->new;
$t->mock('a', key => 'sk-aaa');
$t->mock('b', key => 'sk-bbb');
$t->write_file('key.txt', "sk-aaa\n");

# one model "main" on provider $p, the default unless $rule routes away
sub conf {
    my ($p, $rule) = @_;
    return <<"EOF";
llm_router_model main  { url %%URL_$p%%; model main-$p; key_file %%PREFIX%%/key.txt; }
llm_router_model other { url %%URL_b%%;  model other;   key sk-bbb; }
server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
    location = /v1/chat/completions {
        llm_router on;
        $rule
        llm_router_default main;
        proxy_pass \$llm_router_url;
    }
}
EOF
}

my $hi = { model => 'auto', messages => [{ role => 'user', content => 'hi' }] };

$t->config(conf('a', ''))->run;
is $t->route(body => $hi), 'main/default@a:main-a', 'before reload';

$t->write_file('key.txt', "sk-bbb\n");
ok $t->reload(conf('b', 'llm_router_rule gold $http_x_tier=gold other;')), 'reloaded';
is $t->route(body => $hi), 'main/default@b:main-b', 'new url, model and key_file after reload';
is $t->route(body => $hi, headers => { 'X-Tier' => 'gold' }), 'other/gold@b:other',
   'new rule after reload';

$t->stop;
