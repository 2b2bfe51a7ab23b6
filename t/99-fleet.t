#!/usr/bin/perl
# Fleet budgets and cooldowns through Redis (issue 14): llm_router_redis
# names a Redis server, a budget with store=redis:NAME keeps its spend
# there, so that several nginx servers together admit exactly what one
# would, and llm_router_cooldown_store redis:NAME shares the cooldowns.
# When Redis is down, too slow or refuses the password, each server
# enforces the budget in its own zone against limit / llm_router_redis_share,
# and adds what it spent meanwhile to Redis once Redis answers again.
#
# The test starts its own redis-server on a free port, with a directory of
# its own and an append-only file written at every command, so that a
# redis-server killed with SIGKILL and started again on the same port and
# directory still has its data.  Two nginx servers, A and B, each with
# its own prefix, port and mock providers, share it.
#
# As in t/92-budgets.t the requests ask "hello" with max_tokens 98 and the
# mock answers 392 bytes, 98 tokens: on large (2.50 / 10.00 USD per
# million tokens) each costs exactly its worst case, 8 × 2.5 + 98 × 10 =
# 1000 µUSD = 0.001 USD = 1e9 pico-USD, what Redis holds.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(only slurp json_encode);

sub find_bin {
    my ($name) = @_;
    for (split(/:/, $ENV{PATH} // ''), '/usr/bin', '/usr/sbin', '/usr/local/bin') {
        return "$_/$name" if length && -x "$_/$name";
    }
    return undef;
}

my $REDIS_BIN = find_bin('redis-server');
my $CLI_BIN = find_bin('redis-cli');
my $TIMEOUT_BIN = find_bin('timeout');
plan skip_all => 'redis-server is not installed (apt-get install redis-server)'
    unless $REDIS_BIN && $CLI_BIN;

plan tests => 58;

my $W = 8 * 2_500_000 + 98 * 10_000_000;      # pico-USD of one request on large
my $MAX = 98;
my $REPLY = 4 * $MAX;

# ------------------------------------------------------------ redis-server

my %REDIS;      # pid => server, those still running

END {
    for my $pid (keys %REDIS) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
}

# Start a redis-server (%o: port, dir to start one again where it was;
# pass for --requirepass); waits until it answers PING.
sub redis_start {
    my (%o) = @_;
    my $port = $o{port} // LLMRouterTest::free_port();
    my $dir = $o{dir} // tempdir('llmr-redis-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{LLMR_KEEP});
    my @cmd = ($REDIS_BIN, '--port', $port, '--bind', '127.0.0.1', '--dir', $dir,
               '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--daemonize', 'no');
    push @cmd, '--requirepass', $o{pass} if defined $o{pass};
    my $log = "$dir/redis.log";
    my $pid = LLMRouterTest::spawn(\@cmd, $log);
    LLMRouterTest::wait_port($port, $pid)
        or die "redis-server did not start:\n" . slurp($log);
    my $r = { port => $port, dir => $dir, pass => $o{pass}, pid => $pid, log => $log };
    $REDIS{$pid} = $r;
    my $deadline = time + 10;
    sleep 0.02 until cli($r, 'PING') eq 'PONG' || time > $deadline;
    return $r;
}

sub redis_kill {
    my ($r, $sig) = @_;
    kill $sig // 'TERM', $r->{pid};
    waitpid $r->{pid}, 0;
    delete $REDIS{ $r->{pid} };
}

# redis-cli's answer, without its last newline (options such as -n N
# may come first)
sub cli {
    my ($r, @args) = @_;
    my @cmd = ($CLI_BIN, '-h', '127.0.0.1', '-p', $r->{port});
    unshift @cmd, $TIMEOUT_BIN, '10' if $TIMEOUT_BIN;
    push @cmd, '--no-auth-warning', '-a', $r->{pass} if defined $r->{pass};
    open my $fh, '-|', @cmd, @args or die "redis-cli: $!\n";
    local $/;
    my $out = <$fh> // '';
    close $fh;
    $out =~ s/\n\z//;
    return $out;
}

# The key of a budget's spend in Redis, in the current period.
sub bkey {
    my ($budget, $user, $period) = @_;
    return "llmr:budget:$budget:$user:" . int(time / ($period // 86400));
}

# "s" and "r" of a budget's key (0 for a missing field); %o: db
sub spend {
    my ($r, $key, %o) = @_;
    my @db = defined $o{db} ? ('-n', $o{db}) : ();
    return map { my $v = cli($r, @db, 'HGET', $key, $_); length $v ? $v : 0 } qw(s r);
}

# true once $check is, polling for at most $seconds
sub wait_for {
    my ($seconds, $check) = @_;
    my $deadline = time + $seconds;
    while (1) {
        return 1 if $check->();
        return 0 if time > $deadline;
        sleep 0.05;
    }
}

# wait_for($check), with $poke (requests that make nginx talk to Redis)
# at first and then every half second
sub poking {
    my ($seconds, $poke, $check) = @_;
    my $next = 0;
    return wait_for($seconds, sub {
        if (time >= $next) {
            $poke->();
            $next = time + 0.5;
        }
        return $check->();
    });
}

# ------------------------------------------------------------ nginx

sub fleet_conf {
    my ($redis) = @_;
    return <<"EOF" . <<'EOF';
llm_router_zone llm 1m;
llm_router_redis r server=127.0.0.1:$redis->{port} timeout=1s;
EOF
llm_router_redis_share 2;
llm_router_cooldown_store redis:r;

llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; fallback large; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }

# room for 4 requests of 0.001 in the fleet
llm_router_budget fleet  key=$http_x_user limit=0.004 period=day action=reject store=redis:r;
# Redis killed: 0.006 for each server alone (llm_router_redis_share 2)
llm_router_budget outage key=$http_x_user limit=0.012 period=day action=reject store=redis:r;
# requests that make the servers talk to Redis, without spending on the others
llm_router_budget poke   key=$http_x_user limit=1 period=day action=reject store=redis:r;
llm_router_budget plain  key=$http_x_user limit=1 period=day action=reject;

log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    access_log %%PREFIX%%/llm.log llm;
    %%ROUTE_HEADERS%%

    location = /fleet  { llm_router on; llm_router_default large; llm_router_budget fleet;  proxy_pass $llm_router_url; }
    location = /outage { llm_router on; llm_router_default large; llm_router_budget outage; proxy_pass $llm_router_url; }
    location = /poke   { llm_router on; llm_router_default large; llm_router_budget poke;   proxy_pass $llm_router_url; }
    location = /plain  { llm_router on; llm_router_default large; llm_router_budget plain;  proxy_pass $llm_router_url; }
    location = /cool   { llm_router on; llm_router_default mini; proxy_pass $llm_router_url; }

    location = /metrics {
        llm_router_status;
    }
}
EOF
}

sub server {
    my ($conf, @mocks) = @_;
    my $t = LLMRouterTest->new;
    $t->mock($_, key => "sk-$_") for @mocks;
    $t->config($conf)->run;
    return $t;
}

# A budget request as $user: worst case = cost = 0.001 on large.
sub req {
    my ($t, $path, $user, %h) = @_;
    return $t->ask('hello', path => $path, fields => { max_tokens => $MAX },
                   headers => { 'X-User' => $user, 'X-Mock-Reply-Bytes' => $REPLY, %h });
}

sub status_of { my $r = req(@_); return $r->{status} }

# "STATUS" or "STATUS message" (the error without its reset time)
sub outcome {
    my ($r) = @_;
    my $msg = ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH' ? $r->{json}{error}{message} // '' : '';
    $msg =~ s/ it resets in \d+ seconds$//;
    return $r->{status} == 200 ? '200' : "$r->{status} $msg";
}

# Requests [server, path, user, headers...] started at once, each in a
# client process of its own, all waiting for the same go; finish() gives
# their outcomes in the order given.
sub start_clients {
    my (@reqs) = @_;
    pipe my $go_rd, my $go_wr or die "pipe: $!\n";
    my @kids;
    for my $q (@reqs) {
        pipe my $rd, my $wr or die "pipe: $!\n";
        my $pid = fork // die "fork: $!\n";
        if ($pid == 0) {
            close $rd;
            close $go_wr;
            <$go_rd>;               # EOF: go
            my $out = eval { outcome(req(@$q)) } // "error $@";
            $out =~ s/\n/ /g;
            print $wr "$out\n";
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        push @kids, [$pid, $rd];
    }
    close $go_rd;
    close $go_wr;
    return \@kids;
}

sub finish {
    my ($kids) = @_;
    my @out;
    for (@$kids) {
        my $rd = $_->[1];
        my $s = <$rd> // "none\n";
        chomp $s;
        push @out, $s;
        waitpid $_->[0], 0;
    }
    return @out;
}

sub sent { my ($t, $mock) = @_; return scalar(() = $t->requests($mock)) }


sub redis_up     { return $_[0]->family('llm_router_redis_up')->{qq(name="$_[1]")} // 'none' }
sub redis_errors { return $_[0]->family('llm_router_redis_errors_total')->{qq(name="$_[1]")} // 'none' }

sub status_json { return $_[0]->http(path => '/metrics?format=json')->{json} }

# pico-USD of a USD amount as the module prints it ('none' if not one)
sub pico {
    my ($usd) = @_;
    return 'none' unless defined $usd && !ref $usd;
    if ("$usd" =~ /^(\d+)(?:\.(\d{1,12}))?$/) {
        return $1 * 1_000_000_000_000 + substr(($2 // '') . '0' x 12, 0, 12);
    }
    return $usd =~ /^[\d.eE+-]+$/ ? sprintf('%.0f', $usd * 1e12) : 'none';
}

sub own_spent {
    my ($t, $budget, $user) = @_;
    my $v = $t->family('llm_router_budget_spent_usd')->{qq(budget="$budget",key="$user")};
    return defined $v ? pico($v) : 0;
}

# Where the JSON status page speaks of $name: the values of keys $name
# (objects and arrays) and the objects that have $name as a value.
sub named {
    my ($node, $name) = @_;
    my @found;
    if (ref $node eq 'HASH') {
        push @found, $node if grep { defined && !ref && $_ eq $name } values %$node;
        for my $k (sort keys %$node) {
            push @found, $node->{$k} if $k eq $name && ref $node->{$k};
            push @found, named($node->{$k}, $name);
        }
    } elsif (ref $node eq 'ARRAY') {
        push @found, named($_, $name) for @$node;
    }
    return @found;
}

# the values of the keys $key under $node
sub values_of {
    my ($node, $key) = @_;
    my @v;
    if (ref $node eq 'HASH') {
        for my $k (sort keys %$node) {
            push @v, $node->{$k} if $k eq $key;
            push @v, values_of($node->{$k}, $key);
        }
    } elsif (ref $node eq 'ARRAY') {
        push @v, values_of($_, $key) for @$node;
    }
    return @v;
}

# A budget on the JSON status page: its store, and the fleet-wide spent of
# $user in pico-USD ('none' for what is not there).  The page's shape is
# not fixed here: the budget is the object named by (or naming) it that
# has a "store", the key's fleet_spent_usd is inside it.
sub budget_view {
    my ($json, $budget, $user) = @_;
    for my $b (named($json, $budget)) {
        my ($store) = grep { defined && !ref } values_of($b, 'store');
        next unless defined $store;
        return ($store, 'none') unless defined $user;
        my @fleet = map { ref eq 'HASH' ? $_->{$user} : () } values_of($b, 'fleet_spent_usd');
        push @fleet, grep { !ref } values_of($_, 'fleet_spent_usd') for named($b, $user);
        my ($v) = grep { defined } @fleet;
        return ($store, pico($v));
    }
    return ('none', 'none');
}

# A budget's store on the status page: a text line with its budget and
# store labels (llm_router_budget_store{budget="b",store="redis:r"}), else
# the JSON's "store"
sub store_of {
    my ($t, $budget) = @_;
    for (split /\n/, $t->http(path => '/metrics')->{body}) {
        return $1 if /^llm_router_budget\w*\{(?=[^}]*budget="\Q$budget\E")[^}]*store="([^"]+)"/;
    }
    return (budget_view(status_json($t) // {}, $budget))[0];
}

sub error_lines {
    my ($text, $name) = @_;
    return grep { /\[error\].*llm_router: redis "\Q$name\E"/ } split /\n/, $text;
}

# ================================================================ the fleet

# the day budgets' keys are named by the day: not across midnight UTC
sleep 86400 - time % 86400 + 0.5 if 86400 - time % 86400 < 60;

my $R = redis_start();
my $A = server(fleet_conf($R), qw(mini large));
my $B = server(fleet_conf($R), qw(mini large));

# ------------------------------------------------------------ 1. concurrency

# twelve clients at once, six on each server, answers 500 ms late so that
# every reservation is made while the others are in flight
{
    my $key = bkey('fleet', 'dave');
    my $sent = sent($A, 'large') + sent($B, 'large');
    my $kids = start_clients(map { [$_, '/fleet', 'dave', 'X-Mock-Delay-Ms' => 500] } ($A) x 6, ($B) x 6);
    my @got = finish($kids);
    my %n;
    $n{$_}++ for @got;
    is_deeply \%n, { 200 => 4, '429 budget "fleet" is spent for this period;' => 8 },
              '12 clients at once on two servers, room for 4 in Redis: four 200s, eight 429s'
        or diag explain \@got;
    is sent($A, 'large') + sent($B, 'large') - $sent, 4, 'the providers of both servers received 4 requests';

    # the reservations are settled in the log phase, after the answers
    wait_for(5, sub { my ($s, $r) = spend($R, $key); $s == 4 * $W && $r == 0 });
    is_deeply [spend($R, $key)], [4 * $W, 0],
              "Redis: HGET $key s is the limit, 4000000000 pico-USD; nothing is left reserved";

    my $day = int(time / 86400);
    is cli($R, 'EXPIRETIME', $key), ($day + 1) * 86400 + 60, 'the key expires 60 s after the end of the day';

    is own_spent($A, 'fleet', 'dave') + own_spent($B, 'fleet', 'dave'), 4 * $W,
       'each server keeps its own spend in its zone: together 0.004';
    is_deeply [redis_up($A, 'r'), redis_errors($A, 'r'), redis_up($B, 'r'), redis_errors($B, 'r')],
              [1, 0, 1, 0], 'llm_router_redis_up 1 and llm_router_redis_errors_total 0 on both: all through Redis';
}

# ------------------------------------------------------------ 2. reload

{
    ok $A->reload, 'reload (HUP) of server A';
    is_deeply [outcome(req($A, '/fleet', 'dave')), outcome(req($B, '/fleet', 'dave')), (spend($R, bkey('fleet', 'dave')))[0]],
              [('429 budget "fleet" is spent for this period;') x 2, 4 * $W],
              'after the reload the next requests, on A and on B, are still refused; Redis still holds 0.004';
    wait_for(2, sub { redis_up($A, 'r') eq '1' });
    is redis_up($A, 'r'), 1, 'the new worker of A talks to Redis: llm_router_redis_up 1';
}

# ------------------------------------------------------------ 7. the status page

# the fleet-wide spend of a key as this server reads it from Redis, once
# a second: a key that both servers spent on, each refused once it is all
# settled; then what one server spends shows on the other's page
{
    is status_of($A, '/plain', 'zoe'), 200, 'a request through a budget of the zone';
    my $key = bkey('fleet', 'fay');
    my @got = map { outcome(req($_, '/fleet', 'fay')) } $A, $B, $A, $B;
    wait_for(5, sub { my ($s, $r) = spend($R, $key); $s == 4 * $W && $r == 0 });
    push @got, map { outcome(req($_, '/fleet', 'fay')) } $A, $B;
    is_deeply \@got, [200, 200, 200, 200, ('429 budget "fleet" is spent for this period;') x 2],
              'requests of fay on A, B, A, B fit, then one more on each server is refused';
    my $s = (spend($R, $key))[0];
    my (%store, %text, %redis);
    my $fleet_of = sub {
        my $v = $_[0]->family('llm_router_budget_fleet_spent_usd')->{'budget="fleet",key="fay"'};
        return defined $v ? pico($v) : 'none';
    };
    for ([A => $A], [B => $B]) {
        my ($name, $t) = @$_;
        my $j = status_json($t) // {};
        $store{$name} = [map { store_of($t, $_) } qw(fleet plain)];
        wait_for(3, sub { $fleet_of->($t) eq $s });
        $text{$name} = $fleet_of->($t);
        $redis{$name} = ref $j->{redis} eq 'HASH' && ref $j->{redis}{r} eq 'HASH'
                        ? join(' ', map { "$_=" . ($j->{redis}{r}{$_} // '-') } qw(up errors)) : 'no redis.r';
    }
    is_deeply \%store, { A => ['redis:r', 'zone'], B => ['redis:r', 'zone'] },
              'status page of A and B: budget "fleet" shows its store "redis:r", "plain" its store "zone"';
    is_deeply \%text, { A => $s, B => $s },
              "status page of A and B: llm_router_budget_fleet_spent_usd of fay is what Redis holds ($s), "
              . 'within a second or so'
        or diag explain \%text;
    is_deeply \%redis, { A => 'up=1 errors=0', B => 'up=1 errors=0' },
              'status page (JSON) of A and B: "redis": {"r": {"up": 1, "errors": 0}}';

    # the spec: the JSON has the fleet-wide spent, "fleet_spent_usd"
    my %json;
    wait_for(3, sub {
        %json = map { ($_->[0] => (budget_view(status_json($_->[1]) // {}, 'fleet', 'fay'))[1]) } [A => $A], [B => $B];
        $json{A} eq $s && $json{B} eq $s;
    });
    is_deeply \%json, { A => $s, B => $s },
              "status page (JSON) of A and B: budget \"fleet\" has the fleet_spent_usd of fay that Redis holds ($s)"
        or diag json_encode(status_json($A) // {});

    # what B spends alone shows on A's page, A making no request
    my $kim = bkey('fleet', 'kim');
    is_deeply [status_of($A, '/fleet', 'kim'), status_of($B, '/fleet', 'kim')], [200, 200],
              'kim: a request on A, then one on B';
    my $want = 2 * $W;
    wait_for(5, sub { (spend($R, $kim))[0] == $want });
    my $kim_of = sub {
        my $v = $A->family('llm_router_budget_fleet_spent_usd')->{'budget="fleet",key="kim"'};
        return defined $v ? pico($v) : 'none';
    };
    wait_for(3, sub { $kim_of->() eq $want });
    is $kim_of->(), $want, "A's page shows kim's fleet-wide spend with B's part ($want), read from Redis";
}

# ------------------------------------------------------------ 6. cooldowns

{
    my $r = $B->ask('hi', path => '/cool');
    is $r->{headers}{'x-mock-provider'} // 'none', 'mini', 'B: mini answers before the 429';

    $r = $A->ask('hi', path => '/cool', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 5));
    is_deeply [$r->{status}, $r->{headers}{'x-mock-provider'} // 'none'], [200, 'large'],
              'A: mini answers 429 with Retry-After: 5, large answers';
    my $pttl = cli($R, 'PTTL', 'llmr:cooldown:mini');
    ok $pttl =~ /^\d+$/ && $pttl > 0 && $pttl <= 5000, 'Redis: llmr:cooldown:mini expires within 5 s'
        or diag "PTTL: $pttl";

    my $t0 = time;
    my $cooling = sub { my $v = $B->family('llm_router_cooldown_seconds')->{'model="mini"'}; defined $v && $v > 0 };
    ok wait_for(3, $cooling), 'B: llm_router_cooldown_seconds{model="mini"} > 0 within 3 s'
        or diag 'after ' . (time - $t0) . ' s: ' . ($B->family('llm_router_cooldown_seconds')->{'model="mini"'} // 'none');
    note sprintf 'B saw the cooldown after %.2f s', time - $t0;

    my $before = sent($B, 'mini');
    $r = $B->ask('hi', path => '/cool');
    is_deeply [$r->{status}, $r->{headers}{'x-mock-provider'} // 'none', sent($B, 'mini') - $before],
              [200, 'large', 0], "B's next request skips mini, its fallback large answers";
}

# ------------------------------------------------------------ 3. Redis killed

# limit 0.012, llm_router_redis_share 2: 0.006 for each server alone.
# Before: one request on each server, then two on each in flight when
# Redis is killed; A has then spent 0.003 and has room for 3 more on its
# own, B does one.  Ten requests of 0.001 in all.
{
    my $key = bkey('outage', 'erin');
    my @pre = (status_of($A, '/outage', 'erin'), status_of($B, '/outage', 'erin'));
    wait_for(5, sub { my ($s, $r) = spend($R, $key); $s == 2 * $W && $r == 0 });
    is_deeply [@pre, spend($R, $key)], [200, 200, 2 * $W, 0], 'Redis up: one request on each server, 0.002 in Redis';

    my %err0 = (A => redis_errors($A, 'r'), B => redis_errors($B, 'r'));
    my %off = (A => length $A->error_log, B => length $B->error_log);

    my $kids = start_clients(map { [$_, '/outage', 'erin', 'X-Mock-Delay-Ms' => 1500] } $A, $A, $B, $B);
    my $reserved = wait_for(1.2, sub { (spend($R, $key))[1] == 4 * $W });
    my $killed = time;
    redis_kill($R, 'KILL');
    my @inflight = finish($kids);
    ok $reserved, 'four requests in flight, reserved in Redis, when it is killed (SIGKILL)';
    is_deeply \@inflight, [200, 200, 200, 200], 'the four requests in flight are answered 200';

    my @a = map { outcome(req($A, '/outage', 'erin')) } 1 .. 4;
    my @b = (outcome(req($B, '/outage', 'erin')));
    is_deeply [@a, @b], [200, 200, 200, '429 budget "outage" is spent for this period;', 200],
              'Redis down: each server alone admits 0.006 of its own: A three more, then 429; B one more';

    my %lines = (A => [error_lines(substr($A->error_log, $off{A}), 'r')],
                 B => [error_lines(substr($B->error_log, $off{B}), 'r')]);
    is_deeply { map { $_ => scalar @{ $lines{$_} } } qw(A B) }, { A => 1, B => 1 },
              'one [error] line "llm_router: redis "r" ..." in each error.log (one worker each, once a minute)'
        or diag join "\n", map { @$_ } values %lines;
    note $_ for map { @$_ } values %lines;

    my %err1 = (A => redis_errors($A, 'r'), B => redis_errors($B, 'r'));
    is_deeply [redis_up($A, 'r'), redis_up($B, 'r'),
               map { $err1{$_} ne 'none' && $err0{$_} ne 'none' && $err1{$_} > $err0{$_} ? 'errors grew' : "$err0{$_} -> $err1{$_}" } qw(A B)],
              [0, 0, 'errors grew', 'errors grew'],
              'llm_router_redis_up{name="r"} 0 on A and B, llm_router_redis_errors_total grew on both';
    my $j = status_json($A) // {};
    is ref $j->{redis} eq 'HASH' && ref $j->{redis}{r} eq 'HASH' ? $j->{redis}{r}{up} : 'none', 0,
       'JSON of A: redis.r.up 0';

    # the same port and directory: the append-only file has the data
    $R = redis_start(port => $R->{port}, dir => $R->{dir});
    is_deeply [(spend($R, bkey('fleet', 'dave')))[0], (spend($R, $key))[0] >= 2 * $W ? 'kept' : 'lost'],
              [4 * $W, 'kept'], 'redis-server started again on the same port and directory: the spend is still there';

    # requests of another budget make the servers talk to Redis again
    my $t0 = time;
    poking(10, sub { status_of($_, '/poke', 'poke') for $A, $B }, sub { (spend($R, $key))[0] == 10 * $W });
    note sprintf 'reconciled %.2f s after the restart (Redis was killed %.2f s before it)', time - $t0, $t0 - $killed;
    is ((spend($R, $key))[0], 10 * $W,
        'reconciled: Redis holds the cost of the ten requests answered 200 (2 before, 4 in flight, 4 during the outage)');
    wait_for(3, sub { redis_up($A, 'r') eq '1' && redis_up($B, 'r') eq '1' });
    is_deeply [redis_up($A, 'r'), redis_up($B, 'r')], [1, 1], 'llm_router_redis_up 1 again on both';
}

$A->stop;
$B->stop;

# ------------------------------------------------------------ 4. a password

# one server, two names for the same redis-server: "good" with its
# password (and db 3), "bad" with a wrong one; 0.001 already spent in
# Redis in both budgets, by "another server"
{
    my $P = redis_start(pass => 's3cret');
    my $c = LLMRouterTest->new;
    $c->mock('large', key => 'sk-large');
    $c->write_file('good.pass', "s3cret\n", 0600);
    $c->write_file('bad.pass', "wrong\n", 0600);
    my $gkey = bkey('pwgood', 'gus');
    my $bkey = bkey('pwbad', 'gus');
    cli($P, '-n', 3, 'HSET', $gkey, 's', $W);
    cli($P, 'HSET', $bkey, 's', $W);

    $c->config(<<"EOF" . <<'EOF')->run;
llm_router_zone llm 1m;
llm_router_redis good server=127.0.0.1:$P->{port} password_file=%%PREFIX%%/good.pass db=3 timeout=1s;
llm_router_redis bad  server=127.0.0.1:$P->{port} password_file=%%PREFIX%%/bad.pass timeout=1s;
EOF
llm_router_model large { url %%URL_large%%; model gpt-4o; key sk-large; price 2.50 10.00; }
llm_router_budget pwgood key=$http_x_user limit=0.002 period=day action=reject store=redis:good;
llm_router_budget pwbad  key=$http_x_user limit=0.002 period=day action=reject store=redis:bad;
log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;
    access_log %%PREFIX%%/llm.log llm;
    location = /good { llm_router on; llm_router_default large; llm_router_budget pwgood; proxy_pass $llm_router_url; }
    location = /bad  { llm_router on; llm_router_default large; llm_router_budget pwbad;  proxy_pass $llm_router_url; }
    location = /metrics { llm_router_status; }
}
EOF

    is_deeply [map { status_of($c, '/good', 'gus') } 1 .. 2], [200, 429],
              'the right password (and db 3): the 0.001 spent in Redis counts, one request fits 0.002';
    wait_for(5, sub { (spend($P, $gkey, db => 3))[0] == 2 * $W });
    is_deeply [spend($P, $gkey, db => 3), redis_up($c, 'good'), redis_errors($c, 'good')], [2 * $W, 0, 1, 0],
              'the right password: Redis (db 3) holds 0.002; llm_router_redis_up{name="good"} 1, no errors';

    is_deeply [map { status_of($c, '/bad', 'gus') } 1 .. 3], [200, 200, 429],
              'a wrong password: the local fallback serves the requests, two fit 0.002 on their own';
    my @lines = error_lines($c->error_log, 'bad');
    ok @lines && $lines[0] =~ /auth|password/i, 'a wrong password: an [error] line about the authentication'
        or diag $c->error_log;
    is_deeply [redis_up($c, 'bad'), (spend($P, $bkey))[0], scalar error_lines($c->error_log, 'good')], [0, $W, 0],
              'a wrong password: llm_router_redis_up{name="bad"} 0, nothing written to Redis; no error for "good"';
    $c->stop;
    redis_kill($P);
}

# ------------------------------------------------------------ 5. a slow Redis

# one worker; Redis paused for 3 s: a budget request waits for timeout=1s,
# then goes on locally; meanwhile the worker answers other requests
{
    my $d = LLMRouterTest->new;
    $d->mock('large', key => 'sk-large');
    $d->config(<<"EOF" . <<'EOF')->run;
llm_router_zone llm 1m;
llm_router_redis s server=127.0.0.1:$R->{port} timeout=1s;
EOF
llm_router_model large { url %%URL_large%%; model gpt-4o; key sk-large; price 2.50 10.00; }
llm_router_budget slow key=$http_x_user limit=1 period=day action=reject store=redis:s;

server {
    listen 127.0.0.1:%%PORT%%;
    location = /slow { llm_router on; llm_router_default large; llm_router_budget slow; proxy_pass $llm_router_url; }
    location = /free { llm_router on; llm_router_default large; proxy_pass $llm_router_url; }
    location = /metrics { llm_router_status; }
}
EOF
    my $key = bkey('slow', 'sam');
    is status_of($d, '/slow', 'sam'), 200, 'a budget request through Redis';
    wait_for(5, sub { my ($s, $r) = spend($R, $key); $s == $W && $r == 0 });
    is_deeply [spend($R, $key)], [$W, 0], 'Redis holds its cost';

    is cli($R, 'CLIENT', 'PAUSE', 3000, 'ALL'), 'OK', 'Redis paused for 3 s (CLIENT PAUSE 3000 ALL)';
    my $paused = time;
    my $body = json_encode({ model => 'auto', max_tokens => $MAX, messages => [ { role => 'user', content => 'hello' } ] });
    my $slow = $d->connect;
    print $slow "POST /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
              . "X-User: sam\r\nX-Mock-Reply-Bytes: $REPLY\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    sleep 0.2;

    my $t0 = time;
    my $r = $d->ask('hello', path => '/free');
    my $quick = time - $t0;
    my $waiting = !IO::Select->new($slow)->can_read(0);
    is_deeply [$r->{status}, $waiting ? 'the budget request still waits' : 'the budget request was answered'],
              [200, 'the budget request still waits'],
              'a request without budget on the same worker is answered while the budget request waits for Redis';
    cmp_ok $quick, '<', 0.5, 'without waiting for Redis';

    my ($raw) = LLMRouterTest::read_all($slow, 10);
    my $elapsed = time - $paused;
    like $raw, qr{^HTTP/1\.1 200 }, 'the budget request is answered 200 by the local fallback';
    note sprintf 'the budget request took %.2f s, the other one %.3f s', $elapsed, $quick;
    ok $elapsed >= 0.9 && $elapsed < 2.5,
       'it came back after about timeout=1s: at least 0.9 s, well before the pause ends (3 s)'
        or diag "$elapsed s";
    ok redis_errors($d, 's') ne 'none' && redis_errors($d, 's') >= 1, 'the timeout counts in llm_router_redis_errors_total';

    # once Redis answers again: the late reservation is released, the
    # spend of the request that went on locally is added
    sleep 0.05 while time < $paused + 3;
    poking(8, sub { status_of($d, '/slow', 'poke') },
           sub { my ($s, $r) = spend($R, $key); $s == 2 * $W && $r == 0 });
    my ($spent, $reserved) = spend($R, $key);
    is $reserved, 0, 'after the pause: the reservation whose answer came too late is released in Redis';
    is $spent, 2 * $W, 'after the pause: Redis holds the cost of both requests, '
                   . 'that of the one that went on locally reconciled';
    $d->stop;
}

redis_kill($R);

# ------------------------------------------------------------ 8. nginx -t

{
    my $k = LLMRouterTest->new;
    my $pass = $k->write_file('redis.pass', "secret\n", 0600);
    my $zone = 'llm_router_zone llm 1m;';
    my $a = 'llm_router_model a { url http://127.0.0.1:1/v1; model a-1; auth none; price 1 2; }';
    my $redis = 'llm_router_redis r server=127.0.0.1:6379;';
    my $budget = sub { "llm_router_budget b key=\$http_x_user limit=1 period=day action=reject store=$_[0];" };
    my $check = sub { $k->config_error(@_) };

    is_deeply [$check->("$zone $a llm_router_redis r server=127.0.0.1:6379 password_file=$pass db=2 timeout=300ms "
                        . 'keepalive=4; llm_router_redis_share 3; llm_router_cooldown_store redis:r; '
                        . $budget->('redis:r'), 'llm_router_budget b;'),
               $check->("$zone $a llm_router_redis u server=unix:/tmp/redis.sock; " . $budget->('redis:u'),
                        'llm_router_budget b;'),
               $check->("$zone $a " . $budget->('zone') . ' llm_router_cooldown_store zone;', 'llm_router_budget b;')],
              ['passed', 'passed', 'passed'],
              'config: valid redis configurations (all parameters, a unix socket, store=zone)';

    like $check->("$zone $a $redis " . $budget->('redis:nope'), 'llm_router_budget b;'), qr/"?nope"?/,
         'config: an unknown redis name in store=redis:nope fails';
    like $check->("$zone $a $redis llm_router_cooldown_store redis:nope;", ''), qr/"?nope"?/,
         'config: an unknown redis name in llm_router_cooldown_store fails';
    like $check->("$zone $a llm_router_redis r timeout=1s;", ''), qr/server=/,
         'config: llm_router_redis without server= fails';
    like $check->("$zone $a llm_router_redis r server=127.0.0.1:6379 foo=1;", ''), qr/foo=1/,
         'config: llm_router_redis with an unknown parameter fails';
    like $check->("$zone $a $redis $redis", ''), qr/duplicate|"r"/,
         'config: a redis name defined twice fails';
    like $check->("$zone $a $redis " . $budget->('bogus'), 'llm_router_budget b;'), qr/store=bogus|bogus/,
         'config: store=bogus fails';
}
