var hero = createSprite(200, 350);
hero.setAnimation("hero");
hero.scale = 0.6;
var coin = createSprite(randomNumber(20, 380), 50);
coin.setAnimation("coin");
coin.scale = 0.4;

function draw() {
  background("darkgreen");
  if (keyDown("left")) {
    hero.x -= 4;
  }
  if (keyDown("right")) {
    hero.x += 4;
  }
  if (hero.isTouching(coin)) {
    coin.x = randomNumber(20, 380);
    hero.scale += 0.01;
  }
  drawSprites();
}
