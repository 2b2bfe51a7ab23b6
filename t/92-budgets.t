#!/usr/bin/perl
# Budgets: llm_router_budget NAME key=... limit=USD period=... action=...
# at http level defines a spend limit per key, llm_router_budget NAME
# applies it.  Before a request is sent its worst case (estimated prompt
# × input price + max_tokens × output price) is reserved in the zone; a
# reservation that does not fit downgrades the request or rejects it with
# 429; the log phase settles the reservation to the real cost.
#
# The requests ask "hello" with max_tokens 98 and the mock answers 392
# bytes, 98 tokens: the real cost of each is its worst case, so that every
# limit below is reached at a known request.  Prices per token, in pico-USD:
# mini 0.15 / 0.60, large 2.50 / 10.00 USD per million tokens.  With the 8
# tokens the module estimates for the prompt (checked first):
#
#     worst case, and cost, on large: 8 × 2.5 + 98 × 10  = 1000 µUSD
#                           on mini:  8 × 0.15 + 98 × 0.6 =  60 µUSD

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use LLMRouterTest qw(route_of json_decode usd);

plan tests => 49;

my %PRICE = (mini => [150_000, 600_000], large => [2_500_000, 10_000_000]);
my $MAX = 98;                 # max_tokens of the requests
my $REPLY = 4 * $MAX;         # bytes of the answers: $MAX tokens

# the zone, the models (mini escalates to large with escalate => 1), the log
sub models {
    my (%o) = @_;
    my $escalate = $o{escalate} ? 'escalate large;' : '';
    return <<"EOF";
llm_router_zone llm 1m;

llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; $escalate }
llm_router_model large { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }

log_format llm escape=none '\$llm_router_log';
EOF
}

# a server whose locations each apply their budgets, large by default
sub server {
    my ($listen, %loc) = @_;
    my $locations = join '', map {
        my ($budgets, $extra) = ref $loc{$_} ? @{ $loc{$_} } : ($loc{$_}, 'llm_router_default large;');
        my $apply = join ' ', map { "llm_router_budget $_;" } split ' ', $budgets;
        <<"EOF" } sort keys %loc;
    location = /$_ {
        llm_router on;
        $apply
        $extra
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass \$llm_router_url;
    }
EOF
    return <<"EOF";
server {
    listen 127.0.0.1:%%PORT%%$listen;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    %%ROUTE_HEADERS%%

$locations
    location = /explain {
        llm_router_explain;
        llm_router_default large;
    }

    location = /metrics {
        llm_router_status;
    }
}
EOF
}

sub budgets {
    my (%o) = @_;
    my $cap = $o{cap} // '0.002';
    return <<"EOF";
# large, large, then mini three times (the last one exactly at the limit)
llm_router_budget down   key=\$http_x_user limit=0.00218 period=day action=downgrade:mini;
# large twice, the second exactly at the limit
llm_router_budget cap    key=\$http_x_user limit=$cap period=hour action=reject;
# 8 × 2.5 + 50 × 10 = 520 µUSD without max_tokens in the request
llm_router_budget tokens key=\$http_x_user limit=0.00052 period=day action=reject max_tokens=50;
# 8 × 2.5 + 4096 × 10 = 40980 µUSD: the default max_tokens is 4096
llm_router_budget dflt   key=\$http_x_user limit=0.04098 period=day action=reject;
llm_router_budget dflt2  key=\$http_x_user limit=0.040979 period=day action=reject;
llm_router_budget wide   key=\$http_x_user limit=0.002 period=day action=reject;
llm_router_budget narrow key=\$http_x_user limit=0.000001 period=day action=reject;
llm_router_budget strm   key=\$http_x_user limit=0.002 period=day action=reject;
llm_router_budget many   key=\$http_x_user limit=1 period=day action=reject;
llm_router_budget minute key=\$http_x_user limit=0.001 period=minute action=reject;
llm_router_budget b1     key=\$http_x_user limit=1 period=day action=reject;
llm_router_budget b2     key=\$http_x_user limit=1 period=day action=reject;
llm_router_budget b3     key=\$http_x_user limit=1 period=day action=reject;
llm_router_budget b4     key=\$http_x_user limit=1 period=day action=reject;
EOF
}

sub conf {
    my (%o) = @_;
    return models() . budgets(%o) . server('',
        down => 'down', cap => 'cap', tokens => 'tokens', dflt => 'dflt', dflt2 => 'dflt2',
        two => 'wide narrow', wide => 'wide', stream => 'strm', many => 'many', minute => 'minute',
        four => 'b1 b2 b3 narrow');
}

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');
$t->config(conf())->run;

# ------------------------------------------------------------ helpers

my %logged;

# A request as user $user to /$path: "hello", max_tokens 98 and answers of
# 98 tokens unless told otherwise (%o: fields, headers, no_max, reply).
# Waits for its log record: the log phase settles the reservation, and
# nginx may run it just after the client has the answer.
sub req {
    my ($tt, $path, $user, %o) = @_;
    my %fields = $o{no_max} ? () : (max_tokens => $MAX);
    %fields = (%fields, %{ $o{fields} || {} });
    my $r = $tt->ask('hello', path => "/$path", fields => \%fields,
                     headers => { 'X-User' => $user, 'X-Mock-Reply-Bytes' => $o{reply} // $REPLY,
                                  %{ $o{headers} || {} } });
    my $n = ++$logged{$tt->prefix};
    my @rec = $tt->access_log_records('llm.log', $n);
    die "no log record for request $n\n" unless @rec >= $n;
    $r->{record} = $rec[$n - 1];
    # cost_usd as written (JSON numbers would turn 0.00006 into 6e-05)
    ($r->{cost}) = ((split /\n/, $tt->read_file('llm.log'))[$n - 1] // '') =~ /"cost_usd":([^,}\]]+)/;
    return $r;
}

# "MODEL/RULE" of a 200, "HTTP 429" etc.
sub outcome { return route_of($_[0]) }

sub outcomes {
    my ($tt, $path, $user, $n, %o) = @_;
    return [map { outcome(req($tt, $path, $user, %o)) } 1 .. $n];
}


sub spent {
    my ($tt, $budget, $user) = @_;
    return $tt->family('llm_router_budget_spent_usd')->{qq(budget="$budget",key="$user")} // 'none';
}

sub sent { my ($tt, $mock) = @_; return scalar(() = $tt->requests($mock)) }

# the error a budget's 429 must carry, and the Retry-After: the seconds to
# the end of the period, as seen before and after the request
sub rejected_ok {
    my ($r, $budget, $period, $t0, $t1, $name) = @_;
    my @left = map { $period - (int($_) % $period) } $t0, $t1;
    my $ra = $r->{headers}{'retry-after'} // 'none';
    my $want = { error => { message => qq(budget "$budget" is spent for this period; it resets in $ra seconds),
                            type => 'invalid_request_error', param => undef, code => undef } };
    is_deeply [$r->{status}, $r->{headers}{'content-type'}, $r->{json},
               (grep { $_ eq $ra } @left) ? 'retry-after ok' : "Retry-After $ra, expected @left"],
              [429, 'application/json', $want, 'retry-after ok'], $name;
}

my $W_LARGE = 8 * $PRICE{large}[0] + $MAX * $PRICE{large}[1];
my $W_MINI = 8 * $PRICE{mini}[0] + $MAX * $PRICE{mini}[1];

# ------------------------------------------------------------ the estimate

{
    my $r = $t->ask('hello', path => '/explain', fields => { max_tokens => $MAX });
    is_deeply [@{ $r->{json} || {} }{qw(prompt_tokens max_tokens est_cost_usd)}], [8, $MAX, usd($W_LARGE)],
              'the module estimates 8 prompt tokens for the requests: their worst case on large is 0.001';
}

# ------------------------------------------------------------ downgrade

{
    my $before = { mini => sent($t, 'mini'), large => sent($t, 'large') };
    my @got;
    my @rec;
    for (1 .. 5) {
        my $r = req($t, 'down', 'alice');
        push @got, outcome($r);
        push @rec, join ' ', (map { $_ // 'null' } @{ $r->{record} }{qw(model rule status)}), $r->{cost} // 'none';
    }
    is_deeply \@got, ['large/default', 'large/default', 'mini/budget', 'mini/budget', 'mini/budget'],
              'downgrade: large while spent + 0.001 fits 0.00218, then mini (rule "budget"), '
              . 'the third mini exactly at the limit';
    is_deeply \@rec, ['large default 200 0.001', 'large default 200 0.001', 'mini budget 200 0.00006',
                      'mini budget 200 0.00006', 'mini budget 200 0.00006'],
              'downgrade: the log records name mini and the rule "budget", with their costs';

    my $body = $t->upstream_json('mini');
    is_deeply [$body->{model}, $t->capture('mini')->{headers}{authorization}, sent($t, 'mini') - $before->{mini},
               sent($t, 'large') - $before->{large}],
              ['gpt-4o-mini', ['Bearer sk-mini'], 3, 2],
              'downgrade: mini got the request rewritten for it, with its own key';

    my $t0 = time;
    my $r = req($t, 'down', 'alice');
    rejected_ok($r, 'down', 86400, $t0, time,
                'downgrade: when mini does not fit either, 429 with the budget\'s error and a Retry-After');
    is_deeply [sent($t, 'mini') - $before->{mini}, sent($t, 'large') - $before->{large},
               @{ $r->{record} }{qw(status error)}],
              [3, 2, 429, $r->{json}{error}{message}],
              'downgrade: the rejected request reached no provider; its log record has the error';

    my $lines = () = $t->error_log =~ /\[info\] .* llm_router: budget "down" downgrades "large" to "mini",/g;
    is $lines, 3, 'downgrade: one info line per downgrade';
    is_deeply [spent($t, 'down', 'alice'), $t->family('llm_router_budget_limit_usd')->{'budget="down"'}],
              ['0.00218', '0.00218'], 'downgrade: spent and limit gauges';
}

# ------------------------------------------------------------ reject, keys

{
    my $before = sent($t, 'large');
    is_deeply outcomes($t, 'cap', 'alice', 2), ['large/default', 'large/default'],
              'reject: two requests of 0.001 fit 0.002, the second exactly';
    my $t0 = time;
    my $r = req($t, 'cap', 'alice');
    rejected_ok($r, 'cap', 3600, $t0, time, 'reject: the third: 429, its error names the budget and the reset');
    is_deeply outcomes($t, 'cap', 'bob', 1), ['large/default'], 'reject: another key has its own spend';
    is_deeply [spent($t, 'cap', 'alice'), spent($t, 'cap', 'bob'), sent($t, 'large') - $before],
              ['0.002', '0.001', 3], 'reject: spent per key; the rejected request was not sent';
}

# ------------------------------------------------------------ max_tokens

# without max_tokens in the request, the budget's max_tokens=50: 520 µUSD;
# the answer is 2 tokens: it costs 8 × 2.5 + 2 × 10 = 40 µUSD
is_deeply [map { outcome(req($t, 'tokens', 'ann', no_max => 1, reply => 8)) } 1 .. 2], ['large/default', 'HTTP 429'],
          'max_tokens=50 of the budget: 520 µUSD reserved without max_tokens, exactly the limit; '
          . '40 + 520 does not fit';
is spent($t, 'tokens', 'ann'), '0.00004', 'max_tokens=50: settled to the real cost, 0.00004';
is_deeply [outcome(req($t, 'tokens', 'ben', fields => { max_tokens => 51 })),
           outcome(req($t, 'tokens', 'ben', no_max => 1, fields => { max_completion_tokens => 51 })),
           outcome(req($t, 'tokens', 'ben', fields => { max_tokens => 10 }, reply => 40))],
          ['HTTP 429', 'HTTP 429', 'large/default'],
          'max_tokens of the request wins over the budget\'s: 51 does not fit (530 µUSD), '
          . 'nor max_completion_tokens 51, 10 does';
is_deeply [outcome(req($t, 'dflt', 'eve', no_max => 1, reply => 8)), outcome(req($t, 'dflt2', 'eve', no_max => 1))],
          ['large/default', 'HTTP 429'],
          'the default max_tokens is 4096: 0.04098 fits a limit of 0.04098, not one of 0.040979';

# ------------------------------------------------------------ two budgets

# /two applies wide (0.002) then narrow (0.000001): wide's reservation must
# be given back when narrow rejects
{
    my @got = map { my $r = req($t, 'two', 'carol'); "$r->{status} " . ($r->{json}{error}{message} // '') =~ s/ it resets.*//r }
              1 .. 3;
    is_deeply \@got, [('429 budget "narrow" is spent for this period;') x 3],
              'two budgets: the second rejects, naming itself';
    is_deeply outcomes($t, 'wide', 'carol', 3), ['large/default', 'large/default', 'HTTP 429'],
              'two budgets: the first budget still admits two requests of 0.001: nothing was left reserved';
    is spent($t, 'wide', 'carol'), '0.002', 'two budgets: the first one\'s spend';
}

{
    my $r = req($t, 'four', 'dora');
    is_deeply [$r->{status}, $r->{json}{error}{message} // ''],
              [429, 'budget "narrow" is spent for this period; it resets in ' . ($r->{headers}{'retry-after'} // '?')
                    . ' seconds'],
              'four budgets applied: the fourth is enforced too';
}

# ------------------------------------------------------------ streams

{
    my $stream = { stream => JSON::PP::true };
    my @got;
    for (1 .. 2) {
        my $r = req($t, 'stream', 'frank', fields => $stream);
        push @got, join ' ', outcome($r), $r->{headers}{'content-type'}, $r->{record}{usage_source},
                             $r->{cost} // 'none', spent($t, 'strm', 'frank');
    }
    is_deeply \@got, ['large/default text/event-stream response 0.001 0.001',
                      'large/default text/event-stream response 0.001 0.002'],
              'streams: each costs 0.001 by its usage chunk, and the spend grows by it';
    my $r = req($t, 'stream', 'frank', fields => $stream);
    is_deeply [$r->{status}, $r->{headers}{'content-type'}], [429, 'application/json'],
              'streams: the third does not fit: a JSON 429, no stream';

    $r = req($t, 'stream', 'gina', fields => $stream, headers => { 'X-Mock-Usage' => 'none' });
    my ($source, $cost) = ($r->{record}{usage_source}, $r->{cost} // 0);
    is_deeply [$r->{status}, scalar(@{ $r->{events} }) > 2 ? 'events' : 'no events', $source,
               $cost > 0 ? 'cost > 0' : "cost $cost", spent($t, 'strm', 'gina')],
              [200, 'events', 'estimate', 'cost > 0', $cost],
              'streams: without a usage chunk the estimated cost is spent, not 0';
}

# ------------------------------------------------------------ busiest keys

# 22 keys, key uNN spends 8 × 2.5 + NN × 10 µUSD (answers of NN tokens)
{
    req($t, 'many', sprintf('u%02d', $_), reply => 4 * $_) for 1 .. 22;
    my @lines = grep { /^llm_router_budget_spent_usd\{budget="many"/ } split /\n/, $t->http(path => '/metrics')->{body};
    is_deeply \@lines,
              [map { sprintf 'llm_router_budget_spent_usd{budget="many",key="u%02d"} %s', $_,
                             usd(8 * $PRICE{large}[0] + $_ * $PRICE{large}[1]) } reverse 3 .. 22],
              'llm_router_budget_spent_usd: the 20 busiest keys of a budget, largest first';
}

# ------------------------------------------------------------ reload

{
    my $before = $t->family('llm_router_budget_spent_usd');
    ok $t->reload, 'reload (HUP) with the same configuration';
    is_deeply $t->family('llm_router_budget_spent_usd'), $before, 'reload: every spend is kept';
    is_deeply [outcome(req($t, 'cap', 'alice')), outcome(req($t, 'down', 'alice')), outcome(req($t, 'cap', 'bob'))],
              ['HTTP 429', 'HTTP 429', 'large/default'],
              'reload: what was rejected still is, the other key has room for one more';

    ok $t->reload(conf(cap => '0.004')), 'reload with the limit of "cap" raised to 0.004';
    is_deeply [outcome(req($t, 'cap', 'alice')), outcome(req($t, 'cap', 'alice')), outcome(req($t, 'cap', 'alice')),
               spent($t, 'cap', 'alice'), $t->family('llm_router_budget_limit_usd')->{'budget="cap"'}],
              ['large/default', 'large/default', 'HTTP 429', '0.004', '0.004'],
              'reload: the new limit applies to the kept spend: two more requests';
}

# ------------------------------------------------------------ period=minute

{
    # not across a minute boundary
    sleep 1.2 if 60 - time % 60 < 1.2;
    is outcome(req($t, 'minute', 'hal')), 'large/default', 'period=minute: the first request fits';
    my $t0 = time;
    my $r = req($t, 'minute', 'hal');
    rejected_ok($r, 'minute', 60, $t0, time, 'period=minute: the second is rejected until the next minute');
    SKIP: {
        my $left = $r->{headers}{'retry-after'} // 99;
        skip "the next minute is $left s away (the reset is checked when it is at most 8 s away)", 1
            if $left > 8;
        sleep 0.05 while int(time / 60) == int($t0 / 60);
        sleep 0.1;
        is_deeply [outcome(req($t, 'minute', 'hal')), spent($t, 'minute', 'hal')], ['large/default', '0.001'],
                  'period=minute: in the next minute the spend starts again from 0';
    }
}

$t->stop;

# ------------------------------------------------------------ concurrency

# four workers (connections spread by reuseport), limit 0.004: four
# reservations of 0.001; twelve clients at once, each answer 1 s late
{
    my $c = LLMRouterTest->new;
    $c->mock('mini', key => 'sk-mini');
    $c->mock('large', key => 'sk-large');
    my $budgets = <<'EOF';
llm_router_budget conc key=$http_x_user limit=0.004 period=day action=reject;
llm_router_budget esc  key=$http_x_user limit=0.00424 period=day action=reject;
EOF
    $c->config(models(escalate => 1) . $budgets
               . server(' reuseport', conc => 'conc',
                        esc => ['esc', 'llm_router_default mini; llm_router_escalate on;']));
    my $conf = $c->read_file('nginx.conf');
    $conf =~ s/^worker_processes 1;$/worker_processes 4;/m or die "no worker_processes in nginx.conf\n";
    $c->write_file('nginx.conf', $conf);
    $c->run;

    # $n clients at once; returns their statuses, sorted
    my $parallel = sub {
        my ($n, $path, %h) = @_;
        my @kids;
        for (1 .. $n) {
            pipe my $rd, my $wr or die "pipe: $!\n";
            my $pid = fork // die "fork: $!\n";
            if ($pid == 0) {
                close $rd;
                my $r = $c->ask('hello', path => $path, fields => { max_tokens => $MAX },
                                headers => { 'X-User' => 'dave', 'X-Mock-Reply-Bytes' => $REPLY, %h });
                print $wr "$r->{status}\n";
                close $wr;
                POSIX::_exit(0);
            }
            close $wr;
            push @kids, [$pid, $rd];
        }
        my @st;
        for (@kids) {
            my $rd = $_->[1];
            my $s = <$rd> // "none\n";
            chomp $s;
            push @st, $s;
            waitpid $_->[0], 0;
        }
        return join ' ', sort @st;
    };

    my $before = sent($c, 'large');
    my $got = $parallel->(12, '/conc', 'X-Mock-Delay-Ms' => 1000);
    $c->access_log_records('llm.log', 12);
    $logged{$c->prefix} = 12;
    sleep 0.05;    # the log phase of another worker: its record, then the settling
    my %workers = map { $_ => 1 } $c->error_log =~ /\[info\] (\d+)#\d+: \*\d+ llm_router: budget "conc" rejects/g;
    is_deeply [$got, sent($c, 'large') - $before, spent($c, 'conc', 'dave'),
               keys %workers > 1 ? 'several workers' : 'one worker'],
              [join(' ', ('200') x 4, ('429') x 8), 4, '0.004', 'several workers'],
              'concurrency: 12 clients at once on 4 workers, room for 4 reservations: four 200s, eight 429s, '
              . 'spent 0.004, no overshoot';
    is outcome(req($c, 'conc', 'dave')), 'HTTP 429', 'concurrency: the next one is rejected';

    # mini reserves its worst case with its escalation to large (60 + 1000
    # µUSD): four fit 0.00424; each answer of mini is escalated, and costs
    # that much
    $got = $parallel->(8, '/esc', 'X-Mock-Delay-Ms' => 500, 'X-Mock-Finish' => 'length');
    $c->access_log_records('llm.log', 21);
    sleep 0.05;
    my $spent = spent($c, 'esc', 'dave');
    ok $spent ne 'none' && $spent > 0 && $spent <= 0.00424,
       'concurrency with escalation: the escalation is reserved too: spent at most the limit, 0.00424 '
       . '(mini, then large)'
        or diag "statuses: $got; spent $spent";

    $c->stop;
}

# ------------------------------------------------------------ configuration

my $k = LLMRouterTest->new;
my $zone = 'llm_router_zone llm 1m;';
my $a = 'llm_router_model a { url http://127.0.0.1:1/v1; model a-1; auth none; price 1 2; }';
my $def = 'llm_router_budget b key=$http_x_user limit=1 period=day action=reject;';

sub conf_check { return $k->config_error(@_) }

is_deeply [conf_check("$zone $a $def", 'llm_router_budget b;'),
           conf_check("$zone $a llm_router_budget b; $def", ''),
           conf_check("$zone $a llm_router_budget b key=\$remote_addr\$http_x_user limit=0.5 period=hour "
                      . 'action=downgrade:a max_tokens=100;', 'llm_router_budget b;')],
          ['passed', 'passed', 'passed'],
          'config: valid budgets (applied in a location; applied at http level before it is defined)';

is conf_check("$zone $a", 'llm_router_budget nope;'), 'unknown budget "nope" in "llm_router_budget"',
   'config: an unknown budget applied';

is conf_check("$zone $a " . join(' ', map { "llm_router_budget b$_ key=\$http_x_user limit=1 period=day "
                                            . "action=reject;" } 1 .. 5),
              join(' ', map { "llm_router_budget b$_;" } 1 .. 5)),
   'at most 4 "llm_router_budget" apply to one location',
   'config: five budgets in one location';

is conf_check("$a $def", 'llm_router_budget b;'), '"llm_router_budget" needs "llm_router_zone"',
   'config: a budget without llm_router_zone';

is_deeply [map { conf_check("$zone $a llm_router_budget b $_;", '') }
               'limit=1 period=day action=reject', 'key=$http_x_user period=day action=reject',
               'key=$http_x_user limit=1 action=reject', 'key=$http_x_user limit=1 period=day'],
          [('"llm_router_budget" "b" needs key=, limit=, period= and action= in nginx.conf:N') x 4],
          'config: key=, limit=, period= or action= missing';

is_deeply [map { conf_check("$zone $a llm_router_budget b key=\$http_x_user limit=1 period=day action=reject $_;", '') }
               'period=week', 'period=', 'limit=abc', 'limit=0.0000001', 'max_tokens=x', 'action=drop', 'foo=1',
               'action=downgrade:'],
          [map { qq(invalid parameter "$_" in "llm_router_budget" "b" in nginx.conf:N) }
               'period=week', 'period=', 'limit=abc', 'limit=0.0000001', 'max_tokens=x', 'action=drop', 'foo=1',
               'action=downgrade:'],
          'config: bad parameters (a bad period, limit, max_tokens, action, an unknown one, downgrade to nothing)';

is conf_check("$zone $a llm_router_budget b key=\$http_x_user limit=1 period=day action=downgrade:nope;", ''),
   'unknown model "nope" in "action=downgrade" of llm_router_budget "b"', 'config: downgrade to an unknown model';

is conf_check("$zone $a", 'llm_router_budget b key=$http_x_user limit=1 period=day action=reject;'),
   '"llm_router_budget" directive with parameters is only allowed at the http level in nginx.conf:N',
   'config: a definition in a location';

is conf_check("$zone $a $def $def", ''), '"llm_router_budget" directive is duplicate in nginx.conf:N',
   'config: a budget defined twice';

# ------------------------------------------------------------ a full zone

# the smallest zone holds about a hundred keys (of requests that spend:
# a key that spent nothing takes no room); when it is full, the keys of
# budgets the configuration no longer has are given back
{
    my ($min) = $k->config_error('llm_router_zone llm 16k;', '') =~ /at least (\d+) expected/;
    my $z = LLMRouterTest->new;
    $z->mock('mini', key => 'sk-mini');
    my $conf = sub {
        my ($budget) = @_;
        return <<"EOF2";
llm_router_zone llm $min;
llm_router_model mini  { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; price 0.15 0.60; }
$budget
server {
    listen 127.0.0.1:%%PORT%%;
    %%ROUTE_HEADERS%%
    location = /mini { llm_router on; llm_router_default mini; llm_router_budget keys; proxy_pass \$llm_router_url; }
}
EOF2
    };
    $z->config($conf->('llm_router_budget keys key=$http_x_k limit=1 period=day action=reject;'))->run;

    my $n = 0;
    while ($z->error_log !~ /is full/ && $n < 2000) {
        $z->ask('hi', path => '/mini', headers => { 'X-K' => 'old-' . $n++ });
    }
    like $z->error_log, qr/\[alert\].*the zone "llm" is full, budget "keys" rejects new keys such as "old-\d+"/,
         "a zone of $min bytes is full after $n keys";
    $z->{log_offset} = length $z->error_log;

    # the budget "keys" is now another one, "cap": the old keys go
    $z->reload($conf->('llm_router_budget cap key=$http_x_k limit=1 period=day action=reject;') =~ s/budget keys;/budget cap;/gr);
    my @got = map { $z->ask('hi', path => '/mini', headers => { 'X-K' => "new-$_" })->{status} } 1 .. 3;
    is_deeply [@got, substr($z->error_log, $z->{log_offset}) =~ /is full/ ? 'full' : 'room'],
              [200, 200, 200, 'room'],
              'after a reload with a new budget, the keys of the old one make room for the new';
    $z->stop;
}
