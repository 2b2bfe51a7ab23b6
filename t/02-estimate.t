#!/usr/bin/perl
# The token estimate of long texts: what the router reads of a text is a
# window (llm_router_scan_limit, its first and last halves), and the rest
# is counted at the window's rate.  Against the full rule (every byte
# read, nothing bounded), the estimate stays within 3% on the bodies of
# the benchmark (bench/Bodies.pm) and on the prompts of
# ../shared/routing-eval, each sent as the user message of a chat body.
# build/t/estimate gives both figures for each body.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../bench";
use IPC::Open2;
use JSON::PP;
use Test::More;
use Bodies qw(chat_body);

my $BIN = ($ENV{LLMR_BUILD} // "$FindBin::Bin/../build") . '/t/estimate';
my $EVAL = "$FindBin::Bin/../../shared/routing-eval";

plan skip_all => "$BIN is not built: run make unit" unless -x $BIN;

my $JSON = JSON::PP->new->canonical;

# WINDOWED and FULL of each body
sub estimates {
    my (@bodies) = @_;
    my $pid = open2(my $out, my $in, $BIN) or die "$BIN: $!\n";
    my @got;
    # a writer of its own: a pipe holds less than a body of 1 MB
    my $writer = fork // die "fork: $!\n";
    if ($writer == 0) {
        close $out;
        print $in "$_\n" for @bodies;
        close $in;
        exit 0;
    }
    close $in;
    while (my $line = <$out>) {
        push @got, [split ' ', $line];
    }
    waitpid $writer, 0;
    waitpid $pid, 0;
    return @got;
}

sub worst_error {
    my (@pairs) = @_;
    my $worst = 0;
    for (@pairs) {
        my ($w, $f) = @$_;
        return 1 if $w < 0 || $f <= 0;
        my $e = abs($w - $f) / $f;
        $worst = $e if $e > $worst;
    }
    return $worst;
}

# the benchmark's bodies, JSON and streamed, up to 1 MB and beyond

my @sizes = (1024, 4096, 65536, 1048576, 4 << 20);
my @bench = map { my $n = $_; map { chat_body($n, $_) } 0, 1 } @sizes;
my @got = estimates(@bench);

is scalar @got, scalar @bench, 'an estimate for each benchmark body';
cmp_ok worst_error(@got), '<=', 0.03, 'benchmark bodies: within 3% of the full rule'
    or diag explain \@got;
is_deeply [map { $_->[0] == $_->[1] ? 'same' : 'windowed' } @got[0 .. 3]],
          [('same') x 4], 'bodies under the window (1 KB, 4 KB): the same estimate';
ok $got[6][0] != $got[6][1], 'a body of 1 MB: the window is used (else this test proves nothing)';

# the prompts of routing-eval

SKIP: {
    my @files = grep { -f } map { "$EVAL/$_.dev.jsonl" } qw(mmlu gsm8k);
    skip "$EVAL is not there", 2 unless @files == 2;

    my @prompts;
    for my $file (@files) {
        open my $fh, '<', $file or die "$file: $!\n";
        while (<$fh>) {
            my $row = $JSON->decode($_);
            push @prompts, $JSON->encode({ model => 'auto', messages => [
                                              { role => 'user', content => $row->{prompt} } ] });
        }
    }

    my @e = estimates(@prompts);
    is scalar @e, scalar @prompts, 'an estimate for each routing-eval prompt (' . scalar(@prompts) . ')';
    cmp_ok worst_error(@e), '<=', 0.03, 'routing-eval prompts: within 3% of the full rule';
}

done_testing;
