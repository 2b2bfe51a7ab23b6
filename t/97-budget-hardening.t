#!/usr/bin/perl
# Budgets against hostile requests (issue 12):
#
# - keys whose CRC32 collide each have their own spend, whatever the shape
#   of the tree they are kept in;
# - a huge max_tokens cannot wrap the reservation around 2^64 to about
#   nothing: the arithmetic saturates, and max_tokens is capped at the
#   model's context for the reservation;
# - the status page stays valid UTF-8, in the Prometheus text and in JSON,
#   whatever bytes a key (or a name of the configuration) holds;
# - a flood of distinct keys cannot switch budgets off: refused requests
#   take no room in the zone, a full zone rejects new keys (fail=closed,
#   the default) or lets them through (fail=open), and says so in the
#   error log once a minute, not once a request.
#
# Prices per token, in pico-USD: mini 0.15 / 0.60, large 2.50 / 10.00 USD
# per million tokens.  The module estimates 8 prompt tokens for "hello".

use strict;
use warnings;

use Test::More;
use Compress::Zlib ();
use Digest::MD5 qw(md5_hex);
use Encode ();
use Time::HiRes ();
use JSON::PP ();
use LLMRouterTest qw(route_of usd);

plan tests => 25;

my %PRICE = (mini => [150_000, 600_000], large => [2_500_000, 10_000_000]);
my $MAX = 98;                 # max_tokens of the ordinary requests
my $REPLY = 4 * $MAX;         # bytes of their answers: $MAX tokens

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');

# a location that routes to $model and applies the budget $budget
sub loc {
    my ($path, $model, $budget, $extra) = @_;
    $extra //= '';
    return <<"EOF";
    location = /$path {
        llm_router on;
        llm_router_default $model;
        llm_router_budget $budget;
        $extra
        proxy_pass \$llm_router_url;
    }
EOF
}

# "b\xff": a name of the configuration that is not UTF-8
my $BAD = "b\xff";

my $locations = join '', loc('one', 'large', 'one'), loc('wrap', 'mini', 'wrap'),
                        loc('sum', 'esc', 'wrap', 'llm_router_escalate on;'),
                        loc('fits', 'win', 'fits'), loc('short', 'win', 'short'),
                        loc('team', 'mini', 'team'), loc('bad', 'mini', $BAD);

$t->config(<<"EOF")->run;
llm_router_zone llm 1m;

llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; }
llm_router_model esc   { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; escalate mini; }
llm_router_model win   { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; context 128003; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }

# one request on large: 8 x 2.5 + 98 x 10 = 1000 uUSD, exactly the limit
llm_router_budget one   key=\$http_x_user limit=0.001 period=day action=reject;
llm_router_budget wrap  key=\$http_x_user limit=0.01 period=day action=reject;
# 8 x 0.15 + 128003 x 0.6 = 76803 uUSD: on win, whatever max_tokens says
llm_router_budget fits  key=\$http_x_user limit=0.076803 period=day action=reject;
llm_router_budget short key=\$http_x_user limit=0.076802 period=day action=reject;
llm_router_budget team  key=\$http_x_team limit=1 period=day action=reject;
llm_router_budget $BAD  key=\$http_x_user limit=0.000001 period=day action=reject;

server {
    listen 127.0.0.1:%%PORT%%;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    %%ROUTE_HEADERS%%

$locations
    location = /metrics {
        llm_router_status;
    }
}
EOF

# ------------------------------------------------------------ helpers

# "hello" to /$path with the headers %h (X-User, X-Team...), max_tokens
# $MAX unless told otherwise, answers of $MAX tokens
sub req {
    my ($tt, $path, $h, %fields) = @_;
    return $tt->ask('hello', path => "/$path", fields => { max_tokens => $MAX, %fields },
                    headers => { 'X-Mock-Reply-Bytes' => $REPLY, %$h });
}

sub status_of { return route_of(req(@_)) }

sub scrape { my ($tt, $args) = @_; return $tt->http(path => '/metrics' . ($args // '')) }

# the lines of the exposition that start with $prefix, as written
sub lines_of {
    my ($text, $prefix) = @_;
    return [grep { index($_, $prefix) == 0 } split /\n/, $text];
}

# the settling is in the log phase, which nginx may run after the client
# has the answer: the spent gauges are read once they have $n lines
sub spent_lines {
    my ($tt, $budget, $n) = @_;
    my $deadline = Time::HiRes::time() + 5;
    while (1) {
        my $l = [grep { /budget="\Q$budget\E"/ }
                 @{ lines_of(scrape($tt)->{body}, 'llm_router_budget_spent_usd{') }];
        return $l if @$l >= $n || Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.05);
    }
}

# whether bytes are well-formed UTF-8: Perl's own check, and Encode's
# strict one (no surrogates, nothing above U+10FFFF)
sub utf8_ok {
    my ($bytes) = @_;
    my $copy = $bytes;
    return 0 unless utf8::decode($copy);
    $copy = $bytes;
    return eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK); 1 } ? 1 : 0;
}

# ------------------------------------------------------------ collisions

# Two keys whose CRC32 are equal, by a birthday search over strings of 10
# hex digits (about 100,000 of them), and a third key whose node in the
# tree sorts after theirs.  In a fresh tree, A, then B (equal hash: to the
# right of A), then C (right of B) rotate B to the root, with A on its left
# and C on its right: a search that goes only to the right on an equal
# hash finds B, then C, and never A.
{
    my $bh = Compress::Zlib::crc32('one') | 1;      # the budget's hash
    my (%seen, $a, $b);
    for my $i (0 .. 2_000_000) {
        my $s = substr md5_hex("k$i"), 0, 10;
        my $c = Compress::Zlib::crc32($s);
        if (exists $seen{$c} && $seen{$c} ne $s) {
            ($a, $b) = ($seen{$c}, $s);
            last;
        }
        $seen{$c} = $s;
    }
    %seen = ();
    die "no CRC32 collision found\n" unless defined $b;
    my $h = Compress::Zlib::crc32($a) ^ $bh;
    my ($c) = grep { (Compress::Zlib::crc32($_) ^ $bh) > $h } map { "c$_" } 1 .. 100;

    is_deeply [Compress::Zlib::crc32($a) == Compress::Zlib::crc32($b) ? 'collide' : 'differ', $a ne $b],
              ['collide', 1], "collisions: \"$a\" and \"$b\" have the same CRC32";

    my @first = map { status_of($t, 'one', { 'X-User' => $_ }) } $a, $b, $c;
    my @again = map { status_of($t, 'one', { 'X-User' => $_ }) } $a, $b, $c;
    is_deeply [@first, @again], [('large/default') x 3, ('HTTP 429') x 3],
              'collisions: each of the colliding keys and the third spends its own budget, once';
    is_deeply [sort @{ spent_lines($t, 'one', 3) }],
              [sort map { qq(llm_router_budget_spent_usd{budget="one",key="$_"} 0.001) } $a, $b, $c],
              'collisions: one spend per key, none twice';
}

# ------------------------------------------------------------ overflow

# max_tokens × the output price of mini wraps around 2^64 to 248384
# pico-USD for 30744573456183 tokens: 2^64 / 600000 = 30744573456182.6
{
    my $wrap = 30744573456183;
    is_deeply [status_of($t, 'wrap', { 'X-User' => 'w1' }), status_of($t, 'wrap', { 'X-User' => 'w2' }, max_tokens => 2000000),
               status_of($t, 'wrap', { 'X-User' => 'w3' }, max_tokens => $wrap)],
              ['mini/default', 'HTTP 429', 'HTTP 429'],
              'overflow: max_tokens 98 fits 0.01, 2000000 (1.2 USD) does not, nor 30744573456183 (saturated, '
              . 'not wrapped to 0)';

    # on esc, then (escalated) mini: two products of 9.2e18 each, whose
    # sum wraps around 2^64 to 3.25 uUSD
    my $half = 15372286728092;
    is_deeply [status_of($t, 'sum', { 'X-User' => 's1' }), status_of($t, 'sum', { 'X-User' => 's2' }, max_tokens => $half)],
              ['esc/default', 'HTTP 429'],
              'overflow: the worst cases of a model and its escalation are added without wrapping';

    # win has context 128003: what it reserves for any max_tokens above
    is_deeply [status_of($t, 'fits', { 'X-User' => 'f1' }, max_tokens => $wrap),
               status_of($t, 'fits', { 'X-User' => 'f2' }, max_tokens => 2000000),
               status_of($t, 'fits', { 'X-User' => 'f3' }, max_tokens => 128003),
               status_of($t, 'short', { 'X-User' => 'f4' }, max_tokens => $wrap),
               status_of($t, 'short', { 'X-User' => 'f5' }, max_tokens => 127999)],
              ['win/default', 'win/default', 'win/default', 'HTTP 429', 'win/default'],
              'overflow: a max_tokens above the context (128003) reserves the context: 0.076803 fits, '
              . '0.076802 does not';
}

# ------------------------------------------------------------ status, UTF-8

# keys cut at 64 bytes: "k" × 63 and "é" (2 bytes) is cut in the middle of
# the "é"; "j" × 62 and U+1F600 (4 bytes) in the middle of the emoji; a
# key with a byte that is never UTF-8; a whole "é" kept
{
    my @keys = ('k' x 63 . "\xc3\xa9", 'j' x 62 . "\xf0\x9f\x98\x80", "a\xffb", "\xc3\xa9t\xc3\xa9");
    my @got = map { status_of($t, 'team', { 'X-Team' => $_ }) } @keys;
    push @got, status_of($t, 'bad', { 'X-User' => 'x' });
    is_deeply \@got, [('mini/default') x 4, 'HTTP 429'], 'UTF-8: the requests with those keys went';

    spent_lines($t, 'team', 4);
    my $prom = scrape($t);
    ok utf8_ok($prom->{body}), 'UTF-8: the Prometheus text is valid UTF-8'
        or diag join "\n", grep { !utf8_ok($_) } split /\n/, $prom->{body};

    my %keys = map { /key="((?:[^"\\]|\\.)*)"/ ? ($1 => 1) : () }
               @{ lines_of($prom->{body}, 'llm_router_budget_spent_usd{budget="team"') };
    is_deeply [sort keys %keys], [sort 'k' x 63, 'j' x 62, 'a\\\\xFFb', "\xc3\xa9t\xc3\xa9"],
              'UTF-8: a key is cut before a character that 64 bytes would cut, a byte that is not UTF-8 '
              . 'is written \\\\xFF (the value \\xFF)';
    is_deeply [@{ lines_of($prom->{body}, 'llm_router_budget_limit_usd{budget="b\\\\xFF"}') },
               @{ lines_of($prom->{body}, 'llm_router_budget_actions_total{budget="b\\\\xFF"') }],
              ['llm_router_budget_limit_usd{budget="b\\\\xFF"} 0.000001',
               'llm_router_budget_actions_total{budget="b\\\\xFF",action="reject"} 1'],
              'UTF-8: a name of the configuration that is not UTF-8 is escaped the same way';

    my $j = scrape($t, '?format=json');
    my $json = eval { JSON::PP->new->utf8->decode($j->{body}) };
    is_deeply [utf8_ok($j->{body}), ref $json],
              [1, 'HASH'], 'UTF-8: the JSON is valid UTF-8, and valid JSON'
        or diag $@;
    is_deeply [grep { $_->{budget} =~ /^b/ } @{ $json->{budget_actions} || [] }],
              [{ budget => 'b\\xFF', action => 'reject', value => 1 }],
              'UTF-8: in the JSON, the name is "b\\\\xFF" (the value b\\xFF)';
}

$t->stop;

# ------------------------------------------------------------ a flood of keys

# The smallest zone holds about a hundred keys.  /none refuses every
# request; /two applies "keys", which has room, then "none": the
# reservation of "keys" is given back.
{
    my $k = LLMRouterTest->new;
    my ($min) = $k->config_error('llm_router_zone llm 16k;', '') =~ /at least (\d+) expected/;
    my $z = LLMRouterTest->new;
    $z->mock('mini', key => 'sk-mini');
    my $conf = sub {
        my ($open) = @_;
        my $budget = $open ? 'llm_router_budget opens key=$http_x_k limit=1 period=day action=reject fail=open;' : '';
        my $loc = $open ? loc('open', 'mini', 'opens') : '';
        return <<"EOF";
llm_router_zone llm $min;
llm_router_model mini { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; price 0.15 0.60; }
llm_router_budget keys key=\$http_x_k limit=1 period=day action=reject;
llm_router_budget none key=\$http_x_k limit=0.000001 period=day action=reject;
$budget
server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
@{[ loc('keys', 'mini', 'keys') . loc('none', 'mini', 'none')
    . loc('two', 'mini', 'keys', 'llm_router_budget none;') . $loc ]}
    location = /metrics {
        llm_router_status;
    }
}
EOF
    };
    $z->config($conf->(0))->run;

    my $ask = sub { my ($path, $key) = @_; return $z->ask('hi', path => "/$path", headers => { 'X-K' => $key }) };
    my %st;
    $st{ $ask->('none', "refused-$_")->{status} }++ for 1 .. 300;
    $st{ $ask->('two', "rolled-back-$_")->{status} }++ for 1 .. 300;
    is_deeply [\%st, $z->error_log =~ /is full/ ? 'full' : 'room', $ask->('keys', 'first')->{status}],
              [{ 429 => 600 }, 'room', 200],
              'flood: 600 refused requests of distinct keys (300 by their only budget, 300 by a second one) '
              . 'took no room in the zone';

    # fill the zone with keys that spend
    my ($n, $r) = (0);
    do { $r = $ask->('keys', 'fill-' . $n++) } while $r->{status} == 200 && $z->error_log !~ /is full/ && $n < 2000;
    my $message = $r->{json}{error}{message} // '';
    my $ra = $r->{headers}{'retry-after'} // 'none';
    is_deeply [$r->{status}, $message, $r->{headers}{'x-should-retry'}],
              [429, qq(budget "keys" cannot take a new key, its zone is full; it resets in $ra seconds), 'false'],
              "flood: once the zone of $min bytes is full (after $n keys), a new key is rejected (fail=closed)";
    ok $n > 50 && $n < 1000, "flood: the zone held a hundred keys or so ($n)";

    my @more = map { $ask->('keys', "late-$_")->{status} } 1 .. 10;
    is_deeply [@more, $ask->('keys', 'fill-0')->{status}, $ask->('keys', 'first')->{status}],
              [(429) x 10, 200, 200],
              'flood: every new key is rejected; the keys the zone holds are still served, and enforced';

    my @alerts = $z->error_log =~ /^.*\[alert\].*$/mg;
    is_deeply \@alerts, [grep { /llm_router: the zone "llm" is full, budget "keys" rejects new keys such as "fill-\d+" \(logged at most once a minute\)/ } @alerts],
              'flood: the alert names the zone, the budget and a key';
    is scalar @alerts, 1, 'flood: one alert for the 11 requests that found the zone full';
    $z->{log_offset} = length $z->error_log;

    # the same zone, kept by a reload, and a budget that fails open
    ok $z->reload($conf->(1)), 'reload with a budget "opens" that has fail=open';
    my $off = length $z->error_log;
    my @open = map { route_of($ask->('open', "open-$_")) } 1 .. 5;
    my @closed = map { $ask->('keys', "closed-$_")->{status} } 1 .. 5;
    is_deeply [@open, @closed], [('mini/default') x 5, (429) x 5],
              'flood: with fail=open new keys go, unenforced; fail=closed still rejects them';
    @alerts = substr($z->error_log, $off) =~ /^.*\[alert\].*$/mg;
    is_deeply \@alerts,
              [grep { /llm_router: the zone "llm" is full, budget "opens" is not enforced for new keys such as "open-1" \(logged at most once a minute\)/ } @alerts],
              'flood: with fail=open, the alert says the budget is not enforced';
    is scalar @alerts, 1, 'flood: one alert for the 10 requests of the new worker, open or closed';
    $z->{log_offset} = length $z->error_log;
    $z->stop;
}

# ------------------------------------------------------------ configuration

{
    my $k = LLMRouterTest->new;
    my $base = 'llm_router_zone llm 1m; llm_router_model a { url http://127.0.0.1:1/v1; model a-1; auth none; price 1 2; }';
    is_deeply [map { $k->config_error("$base llm_router_budget b key=\$http_x_user limit=1 period=day action=reject $_;",
                                      'llm_router_budget b;') } 'fail=open', 'fail=closed', 'fail=maybe', 'fail='],
              ['passed', 'passed', 'invalid parameter "fail=maybe" in "llm_router_budget" "b" in nginx.conf:N',
               'invalid parameter "fail=" in "llm_router_budget" "b" in nginx.conf:N'],
              'config: fail=open and fail=closed, nothing else';
}
