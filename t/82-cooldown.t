#!/usr/bin/perl
# Cooldown: a model that answers 429 is skipped for its Retry-After (or
# llm_router_cooldown) while its fallback answers, then comes back.  The
# cooldown lives in the llm_router_zone shared memory zone: every worker
# sees it, it outlives a reload, and without a zone there is none.

use strict;
use warnings;

use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(user only);

my $t = LLMRouterTest->new;
$t->mock('mini', key => 'sk-mini');
$t->mock('large', key => 'sk-large');
$t->mock('backup', key => 'sk-backup');

# each test has models of its own: a cooldown is a model's, by name
my $models = <<'EOF';
llm_router_model mini   { url %%URL_mini%%;   model gpt-4o-mini; key sk-mini;   fallback large; }
llm_router_model large  { url %%URL_large%%;  model gpt-4o;      key sk-large;  fallback backup; }
llm_router_model backup { url %%URL_backup%%; model backup-1;    key sk-backup; }
EOF
$models .= join '', map { "llm_router_model $_ { url %%URL_mini%%; model gpt-4o-mini; key sk-mini; fallback big; }\n" }
                    qw(short dflt dated zero soon reload);
$models .= <<'EOF';
llm_router_model big    { url %%URL_large%%;  model gpt-4o;      key sk-large; }
llm_router_model c1     { url %%URL_mini%%;   model gpt-4o-mini; key sk-mini;   fallback c2; }
llm_router_model c2     { url %%URL_large%%;  model gpt-4o;      key sk-large;  fallback backup; }
llm_router_model d1     { url %%URL_mini%%;   model gpt-4o-mini; key sk-mini;   fallback d2; }
llm_router_model d2     { url %%URL_large%%;  model gpt-4o;      key sk-large; }
EOF

my $server = <<'EOF';
log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    llm_router_default mini;
    llm_router_pin short dflt dated zero soon reload c1 d1;     # by the tests
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_connect_timeout 1s;
    proxy_read_timeout 3s;
    access_log %%PREFIX%%/llm.log llm;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        proxy_pass $llm_router_url;
    }

    location = /short {
        llm_router on;
        llm_router_cooldown 500ms;
        proxy_pass $llm_router_url;
    }
}
EOF

my $conf = "llm_router_zone llm 1m;\n" . $models . $server;
$t->config($conf)->run;

my @MOCKS = qw(mini large backup);

sub sent_counts {
    my ($t) = @_;
    return { map { $_ => scalar(() = $t->requests($_)) } grep { $t->{mocks}{$_} } @MOCKS };
}


sub summary {
    my ($rec) = @_;
    return 'no record' unless ref $rec eq 'HASH' && !$rec->{_invalid};
    return sprintf 'fallback=%s | %s', $rec->{fallback} ? 'true' : 'false',
        join ', ', map { "$_->{model} $_->{status} " . ($_->{reason} // '-') } @{ $rec->{attempts} || [] };
}

# Send a chat request to nginx $t (%o as for $t->ask) and describe the
# outcome: "STATUS PROVIDER MODEL/RULE, sent: mini=1 large=1", with
# log => 1 the attempts of its log record; also the response and what
# error.log gained meanwhile.
sub outcome {
    my ($t, %o) = @_;
    my $with_log = delete $o{log};
    my $errlog = length $t->error_log;
    my $before = sent_counts($t);
    my $r = $t->ask('hi', %o);
    $r->{at} = time;
    my $after = sent_counts($t);
    my $sent = join ' ', map { "$_=" . ($after->{$_} - $before->{$_}) }
                         grep { exists $after->{$_} && $after->{$_} != $before->{$_} } @MOCKS;
    my $route = join '/', map { $r->{headers}{"x-llm-$_"} // '-' } qw(model rule);
    my $desc = sprintf '%d %s %s, sent: %s', $r->{status}, $r->{headers}{'x-mock-provider'} // '-',
                       $route, $sent || 'none';
    # every request waits for its record: the next one is then its own,
    # not that of a request before, written after its answer was sent
    if (-e "$t->{prefix}/llm.log") {
        my $record = $t->next_record('llm.log');
        $desc .= ' | ' . summary($record) if $with_log;
    }
    $r->{errlog} = substr $t->error_log, $errlog;
    return ($desc, $r);
}

sub wait_until { my ($at) = @_; my $d = $at - time; sleep $d if $d > 0 }

plan tests => 27;

# ------------------------------------------------------------ Retry-After

my ($d, $r) = outcome($t, log => 1, headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 1));
is $d, '200 large large/default, sent: mini=1 large=1 | fallback=true | mini 429 status, large 200 -',
   '429 with Retry-After: 1: large answers';
my $t429 = $r->{at};

($d, $r) = outcome($t, log => 1);
is $d, '200 large large/default, sent: large=1 | fallback=true | mini 0 cooldown, large 200 -',
   'the next request goes straight to large: the cheap mock receives nothing';
like $r->{errlog}, qr/\[info\] .*llm_router: model "mini" is cooling down, "large" answers/,
     'error.log: the model is cooling down';

my @during;
for (1 .. 3) {
    ($d) = outcome($t);
    push @during, $d;
}
is_deeply \@during, [('200 large large/default, sent: large=1') x 3],
          'every request during the Retry-After skips the cheap model';
ok time - $t429 < 1, 'those requests were made within the Retry-After' or diag time - $t429;

wait_until($t429 + 1.2);
($d, $r) = outcome($t, log => 1);
is_deeply [$d, $r->{errlog} =~ /cooling down/ ? 'cooling' : 'not cooling'],
          ['200 mini mini/default, sent: mini=1 | fallback=false | mini 200 -', 'not cooling'],
          'after the Retry-After (1.2 s), the cheap model answers again';

# ------------------------------------------------------------ llm_router_cooldown

($d, $r) = outcome($t, path => '/short', model => 'short', headers => only('mini', 'X-Mock-Status' => 429));
is $d, '200 large big/client, sent: mini=1 large=1', '429 without Retry-After: the fallback answers';
my $t429s = $r->{at};
($d, $r) = outcome($t, path => '/short', model => 'short');
is_deeply [$d, $r->{errlog} =~ /model "short" is cooling down, "big" answers/ ? 'cooling' : $r->{errlog}],
          ['200 large big/client, sent: large=1', 'cooling'],
          'llm_router_cooldown 500ms: the next request skips the cheap model';
wait_until($t429s + 0.7);
($d) = outcome($t, path => '/short', model => 'short');
is $d, '200 mini short/client, sent: mini=1', 'llm_router_cooldown 500ms: after 0.7 s the cheap model answers again';

# a Retry-After that is not a number of seconds nor a date: llm_router_cooldown
($d, $r) = outcome($t, path => '/short', model => 'soon',
                   headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 'soon'));
my $t429g = $r->{at};
my @soon = ($d, (outcome($t, path => '/short', model => 'soon'))[0]);
wait_until($t429g + 0.7);
push @soon, (outcome($t, path => '/short', model => 'soon'))[0];
is_deeply \@soon, ['200 large big/client, sent: mini=1 large=1', '200 large big/client, sent: large=1',
                   '200 mini soon/client, sent: mini=1'],
          'Retry-After: soon (invalid): llm_router_cooldown applies';

# Retry-After as an HTTP date, and Retry-After: 0
my $date = strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime(time + 3));
is_deeply [(outcome($t, model => 'dated', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => $date)))[0],
           (outcome($t, model => 'dated'))[0]],
          ['200 large big/client, sent: mini=1 large=1', '200 large big/client, sent: large=1'],
          'Retry-After as an HTTP date, 3 s ahead: the model cools down';
is_deeply [(outcome($t, model => 'zero', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 0)))[0],
           (outcome($t, model => 'zero'))[0]],
          ['200 large big/client, sent: mini=1 large=1', '200 mini zero/client, sent: mini=1'],
          'Retry-After: 0: no cooldown, the next request tries the model again';

# without llm_router_cooldown, 10 s: still cooling down after a second
($d, $r) = outcome($t, model => 'dflt', headers => only('mini', 'X-Mock-Status' => 429));
my $t429d = $r->{at};
wait_until($t429d + 1.2);
is_deeply [$d, (outcome($t, model => 'dflt'))[0]],
          ['200 large big/client, sent: mini=1 large=1', '200 large big/client, sent: large=1'],
          'llm_router_cooldown by default (10s): still cooling down after 1.2 s';

# ------------------------------------------------------------ chains

($d) = outcome($t, model => 'c1', headers => only('mini,large', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 1));
my $tc = time;
is_deeply [$d, (outcome($t, log => 1, model => 'c1'))[0]],
          ['200 backup backup/client, sent: mini=1 large=1 backup=1',
           '200 backup backup/client, sent: backup=1 | fallback=true | c1 0 cooldown, backup 200 -'],
          'a chain: every model cooling down is skipped, the next answers';

# every model of the chain cooling down: the first is tried anyway
($d, $r) = outcome($t, model => 'd1', headers => only('mini,large', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 1));
is_deeply [$d, $r->{json}{error}{type}, $r->{headers}{'retry-after'}],
          ['429 large d2/client, sent: mini=1 large=1', 'rate_limit_error', 1],
          'a 429 from the last model of a chain reaches the client, with its Retry-After';
is_deeply [(outcome($t, model => 'd1'))[0]], ['200 mini d1/client, sent: mini=1'],
          'every model cooling down: the first one is tried anyway';

# ------------------------------------------------------------ reload

($d) = outcome($t, model => 'reload', headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 30));
ok $t->reload, 'reload with the same zone';
is_deeply [$d, (outcome($t, model => 'reload'))[0]],
          ['200 large big/client, sent: mini=1 large=1', '200 large big/client, sent: large=1'],
          'the cooldown outlives a reload';

# ------------------------------------------------------------ no zone

my $n = LLMRouterTest->new;
$n->mock('mini', key => 'sk-mini');
$n->mock('large', key => 'sk-large');
$n->mock('backup', key => 'sk-backup');
$n->config($models . $server)->run;

($d) = outcome($n, headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 30));
is $d, '200 large large/default, sent: mini=1 large=1', 'without llm_router_zone: a 429 still fails over';
($d, $r) = outcome($n);
is_deeply [$d, $n->error_log =~ /cooling down/ ? 'cooling' : 'not cooling'],
          ['200 mini mini/default, sent: mini=1', 'not cooling'],
          'without llm_router_zone: no cooldown, the next request tries the cheap model first';
$n->stop;

# ------------------------------------------------------------ workers

# the harness writes "worker_processes 1;": the file is changed before
# nginx starts; "reuseport" gives each worker a listening socket of its
# own, which the kernel picks for each new connection
my $w = LLMRouterTest->new;
$w->mock('mini', key => 'sk-mini');
$w->mock('large', key => 'sk-large');
$w->mock('backup', key => 'sk-backup');
$w->config("llm_router_zone llm 1m;\n" . $models . ($server =~ s/(listen \S+);/$1 reuseport;\n    add_header X-Worker \$pid always;/r));
my $nginx_conf = $w->read_file('nginx.conf');
$w->write_file('nginx.conf', $nginx_conf =~ s/^worker_processes 1;$/worker_processes 2;/mr);
$w->run;

SKIP: {
    my %pids;
    for (1 .. 60) {
        my $r = $w->ask('hi');
        $pids{ $r->{headers}{'x-worker'} // '?' }++;
        last if keys %pids >= 2;
    }
    skip 'nginx did not run two workers that both took connections: ' . join(', ', keys %pids), 2
        unless keys %pids == 2 && !$pids{'?'};

    my ($d, $r) = outcome($w, headers => only('mini', 'X-Mock-Status' => 429, 'X-Mock-Retry-After' => 5));
    my $cooled_by = $r->{headers}{'x-worker'};
    my (@other, @same);
    for (1 .. 60) {
        my ($d, $r) = outcome($w);
        push @{ ($r->{headers}{'x-worker'} // '') eq $cooled_by ? \@same : \@other }, $d;
        last if @other >= 3;
    }
    note sprintf "429 in worker %s; then %d request(s) in the other worker, %d in the same", $cooled_by, scalar @other, scalar @same;
    is_deeply [$d, scalar(@other) >= 1 ? 'the other worker answered' : 'only the same worker answered'],
              ['200 large large/default, sent: mini=1 large=1', 'the other worker answered'],
              'worker_processes 2: a 429 in one worker, then requests taken by the other';
    is_deeply [@other, @same], [('200 large large/default, sent: large=1') x (@other + @same)],
              'the cooldown is shared: the other worker skips the cheap model too';
}
$w->stop;

# ------------------------------------------------------------ configuration

my $c = LLMRouterTest->new;

sub conf_check {
    my ($http, $location) = @_;
    return $c->config_error(
        "llm_router_model a { url http://127.0.0.1:1/v1; model a-1; auth none; }\n$http",
        $location);
}

# the smallest zone holds the tables and a few pages for the slab pool
my ($min) = conf_check('llm_router_zone llm 4k;', '') =~ /at least (\d+) expected/;
$min //= 0;

is conf_check('llm_router_zone llm ' . ($min - 1) . ';', ''),
   qq(invalid zone size "@{[$min - 1]}" in "llm_router_zone", at least $min expected in nginx.conf:N),
   'config: a zone one byte smaller than the smallest';

is_deeply [conf_check("llm_router_zone llm $min;", 'llm_router_cooldown 2s;'),
           conf_check('llm_router_zone llm 4k;', ''),
           conf_check('llm_router_zone llm abc;', ''),
           conf_check('llm_router_zone llm 1m; llm_router_zone other 1m;', ''),
           conf_check('llm_router_zone llm;', ''),
           conf_check('limit_req_zone $binary_remote_addr zone=llm:1m rate=1r/s; llm_router_zone llm 1m;', ''),
           conf_check('', 'llm_router_zone llm 1m;'),
           conf_check('', 'llm_router_cooldown soon;')],
          ['passed',
           qq(invalid zone size "4k" in "llm_router_zone", at least $min expected in nginx.conf:N),
           qq(invalid zone size "abc" in "llm_router_zone", at least $min expected in nginx.conf:N),
           '"llm_router_zone" directive is duplicate in nginx.conf:N',
           'invalid number of arguments in "llm_router_zone" directive in nginx.conf:N',
           'the shared memory zone "llm" is already declared for a different use in nginx.conf:N',
           '"llm_router_zone" directive is not allowed here in nginx.conf:N',
           '"llm_router_cooldown" directive invalid value in nginx.conf:N'],
          'config: llm_router_zone and llm_router_cooldown check their values';

$t->stop;
