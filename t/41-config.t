#!/usr/bin/perl
# Configuration errors: nginx -t fails with a message naming the directive.

use strict;
use warnings;

use Test::More;
use LLMRouterTest;

my $t = LLMRouterTest->new;
$t->write_file('key.txt', "sk-from-file\n");

my %model = (url => 'http://127.0.0.1:1/v1/chat/completions', model => 'gpt-4o-mini',
             key => 'sk-test', price => '0.15 0.60');

# A configuration with one model "mini" (directives from %model, changed
# by %over, undef removes one), a keywords list "complex" and a location
# with the given router directives.
sub conf {
    my ($location, %over) = @_;
    my %d = (%model, %over);
    my $block = join ' ', map { "$_ $d{$_};" } grep { defined $d{$_} } sort keys %d;
    return <<"EOF";
llm_router_model mini { $block }
llm_router_keywords complex "analyze" "explain why";
server {
    listen 127.0.0.1:%%PORT%%;
    location / {
        llm_router on;
        $location
        proxy_pass \$llm_router_url;
    }
}
EOF
}

my $rules = 'llm_router_rule r code keywords=complex !tools mini; llm_router_default mini;';

my @good = (
    ['valid configuration', conf($rules)],
    ['valid configuration with key_file and auth',
     conf($rules, key => undef, key_file => '%%PREFIX%%/key.txt', auth => 'x-api-key')],
);

# [name, config, the directive (and value) the message must name]
my @bad = (
    ['unknown model in a rule', conf('llm_router_rule r code nosuch;'), 'llm_router_rule', 'nosuch'],
    ['unknown model in the default', conf('llm_router_default nosuch;'), 'llm_router_default', 'nosuch'],
    ['unknown keywords list', conf('llm_router_rule r keywords=nolist mini;'), 'llm_router_rule', 'nolist'],
    ['unknown condition', conf('llm_router_rule r frobnicate mini;'), 'llm_router_rule', 'frobnicate'],
    ['reserved rule name', conf('llm_router_rule client code mini;'), 'llm_router_rule', 'client'],
    ['bad number in a condition', conf('llm_router_rule r tokens>lots mini;'), 'llm_router_rule'],
    ['rule without a condition', conf('llm_router_rule r mini;'), 'llm_router_rule'],
    ['price is not a number', conf('', price => '0.15 abc'), 'price'],
    ['negative price', conf('', price => '-1 0.60'), 'price'],
    ['price with too many decimals', conf('', price => '0.1234567 1'), 'price'],
    ['price with one value', conf('', price => '0.15'), 'price'],
    ['missing key_file', conf('', key => undef, key_file => '%%PREFIX%%/no-such.key'), 'key_file'],
    ['model without url', conf('', url => undef), 'url'],
    ['url without a host', conf('', url => 'http:///v1/chat/completions'), 'url'],
    ['unknown auth', conf('', auth => 'magic'), 'auth'],
);

plan tests => @good + 2 * @bad + (grep { @$_ > 3 } @bad) + 1;

for my $c (@good) {
    my ($ok, $out) = $t->config($c->[1])->nginx_test;
    ok $ok, $c->[0] or diag $out;
}

for my $c (@bad) {
    my ($name, $conf, @words) = @$c;
    my ($ok, $out) = $t->config($conf)->nginx_test;
    ok !$ok, "$name: nginx -t fails";
    my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
    like $emerg // $out, qr/^(?=.*\b$words[0]\b)(?=.*nginx\.conf:\d+)/, "$name: message names $words[0]";
    # the offending value too, when there is one: checked in the same line
    like $emerg // '', qr/\Q$words[1]\E/, "$name: message names '$words[1]'" if @words > 1;
}

# a bad regex fails too (the message comes from PCRE)
my ($ok, $out) = $t->config(conf('llm_router_rule r $http_x_user~(oops mini;'))->nginx_test;
like $ok ? 'passed' : $out, qr/\[emerg\].*pcre.*nginx\.conf:\d+/i, 'bad regex: nginx -t fails';
